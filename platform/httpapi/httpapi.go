// Package httpapi holds the conventions of Mercato's public REST API that
// every service's handlers share: strict JSON decoding with errors that name
// the field, JSON responses, list pagination and conditional GETs.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/mercato/mercato/platform/problem"
)

// Decode reads a JSON object from the request body into v. It refuses unknown
// fields, trailing data, wrong types and oversized bodies, returning a
// *problem.Problem that names what is wrong — with the full path of a
// misplaced value, array indices included (variants[1].price.amount).
func Decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSON(ct) {
		return problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "send the body as application/json")
	}
	// The body is bounded by the server's limit; reading it whole lets an
	// error be traced back to its place in the document.
	body, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return problem.TooLarge(tooBig.Limit)
	}
	if err != nil {
		return problem.BadRequest("the request body could not be read")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return problem.BadRequest("the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, body)
	}
	if trimmed[0] != '{' {
		// null decodes into a struct without error, leaving it untouched.
		return problem.BadRequest("the body must be a JSON object")
	}
	if dec.More() {
		return problem.BadRequest("the body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return problem.BadRequest("unexpected data after the JSON object")
	}
	return nil
}

// isJSON reports whether the media type ct is application/json or a
// +json type such as application/merge-patch+json. Media types are
// case-insensitive and may carry parameters.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if mt == "" && err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func decodeError(err error, body []byte) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooBig    *http.MaxBytesError
		invalidUT *json.InvalidUnmarshalError
	)
	switch {
	case errors.Is(err, io.EOF):
		return problem.BadRequest("the request body is empty; send a JSON object")
	case errors.As(err, &tooBig):
		return problem.TooLarge(tooBig.Limit)
	case errors.As(err, &syntax):
		return problem.BadRequest(fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, syntax.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.BadRequest("malformed JSON: the body ends early")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return problem.BadRequest("the body must be a JSON object")
		}
		if p := pathAt(body, typeErr.Offset); p != "" {
			field = p
		}
		return problem.Invalid(problem.FieldError{Field: field, Message: "must be " + describe(typeErr.Type)})
	case errors.As(err, &invalidUT):
		return err
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return problem.Invalid(problem.FieldError{Field: keyPath(body, name), Message: "is not a known field"})
	default:
		var p *problem.Problem
		if errors.As(err, &p) {
			return p
		}
		return problem.BadRequest("malformed JSON: " + err.Error())
	}
}

// describe names the JSON a Go type takes, by its kind, so that named types
// such as type Kind string are described as what they hold.
func describe(t reflect.Type) string {
	if t == nil {
		return "of another JSON type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return "of another JSON type"
	}
}

// WriteJSON sends v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		problem.Write(w, problem.Internal())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// WriteError sends err as problem+json: a *problem.Problem as itself, anything
// else as a logged 500 that reveals nothing.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if p := problem.From(err); p != nil {
		problem.Write(w, p)
		return
	}
	log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	problem.Write(w, problem.Internal())
}

// HandlerFunc is an HTTP handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to http.Handler, writing any returned error with WriteError.
func Handle(log *slog.Logger, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, log, err)
		}
	})
}
