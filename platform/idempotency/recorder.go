package idempotency

import (
	"bytes"
	"net/http"
	"slices"
)

// recorder passes the response through to the client as it is written and
// keeps a copy of what a replay needs.
type recorder struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
}

// WriteHeader snapshots the kept headers when the final status is written,
// since headers changed afterwards never reach the client.
func (rw *recorder) WriteHeader(code int) {
	if rw.status == 0 && code >= 200 {
		rw.status = code
		rw.header = keptHeaders(rw.ResponseWriter.Header())
	}
	rw.ResponseWriter.WriteHeader(code)
}

// Write keeps every byte the handler produced, even if the client has gone,
// so that its retry gets the whole response.
func (rw *recorder) Write(b []byte) (int, error) {
	rw.implicitOK()
	rw.body.Write(b)
	return rw.ResponseWriter.Write(b)
}

// Flush supports handlers that stream their response.
func (rw *recorder) Flush() {
	rw.implicitOK()
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// implicitOK records the 200 that net/http sends when a handler writes
// without calling WriteHeader.
func (rw *recorder) implicitOK() {
	if rw.status == 0 {
		rw.status = http.StatusOK
		rw.header = keptHeaders(rw.ResponseWriter.Header())
	}
}

func (rw *recorder) statusOrOK() int {
	rw.implicitOK()
	return rw.status
}

// keptHeaders copies the headers a replay needs.
func keptHeaders(h http.Header) http.Header {
	out := http.Header{}
	for name, v := range h {
		if replayable(http.CanonicalHeaderKey(name)) && len(v) > 0 {
			out[name] = slices.Clone(v)
		}
	}
	return out
}

// replayable reports whether a header (in canonical form) is kept for a
// replay: those that describe the representation or the created resource.
// Per-response headers (Date, X-Request-Id, trace headers) are made afresh
// for the replay, and Set-Cookie is never stored so that a replay cannot
// hand out a session a second time.
func replayable(canonical string) bool {
	switch canonical {
	case "Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
		"Content-Location", "Content-Type", "Etag", "Last-Modified", "Link", "Location", "Vary":
		return true
	}
	return false
}
