package httpapi

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// frame is one open object or array while walking a JSON document.
type frame struct {
	array   bool
	index   int
	key     string
	wantKey bool
}

// walker walks a JSON document token by token, knowing the path of the
// value it is at.
type walker struct {
	dec   *json.Decoder
	stack []frame
}

func newWalker(data []byte) *walker {
	return &walker{dec: json.NewDecoder(bytes.NewReader(data))}
}

func (w *walker) path() string {
	var b strings.Builder
	for _, f := range w.stack {
		if f.array {
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(f.key)
	}
	return b.String()
}

// valueDone moves the enclosing container past the value just finished.
func (w *walker) valueDone() {
	if len(w.stack) == 0 {
		return
	}
	top := &w.stack[len(w.stack)-1]
	if top.array {
		top.index++
	} else {
		top.wantKey = true
	}
}

// step reads one token. It reports the path of a value that starts (a
// scalar, or an object or array opening) and whether the token was a key,
// with its name.
func (w *walker) step() (value string, key string, isKey bool, err error) {
	tok, err := w.dec.Token()
	if err != nil {
		return "", "", false, err
	}
	if d, ok := tok.(json.Delim); ok {
		switch d {
		case '{', '[':
			value = w.path()
			w.stack = append(w.stack, frame{array: d == '[', wantKey: d == '{'})
		default:
			w.stack = w.stack[:len(w.stack)-1]
			w.valueDone()
		}
		return value, "", false, nil
	}
	if n := len(w.stack); n > 0 && !w.stack[n-1].array && w.stack[n-1].wantKey {
		name, _ := tok.(string)
		w.stack[n-1].key, w.stack[n-1].wantKey = name, false
		return "", name, true, nil
	}
	value = w.path()
	w.valueDone()
	return value, "", false, nil
}

// pathAt returns the path of the value that ends at byte offset, as
// encoding/json reports type errors, or "" if the walk cannot tell.
func pathAt(data []byte, offset int64) string {
	w := newWalker(data)
	last := ""
	for {
		value, _, isKey, err := w.step()
		if err != nil {
			return last
		}
		if !isKey && value != "" {
			last = value
		}
		if w.dec.InputOffset() >= offset {
			return last
		}
	}
}

// keyPath returns the full path of the key name when the document holds it
// exactly once, and the bare name otherwise (the decoder does not say which
// occurrence it refused).
func keyPath(data []byte, name string) string {
	w := newWalker(data)
	found := ""
	for {
		_, key, isKey, err := w.step()
		if err != nil {
			break
		}
		if isKey && key == name {
			if found != "" {
				return name
			}
			found = w.path()
		}
	}
	if found == "" {
		return name
	}
	return found
}
