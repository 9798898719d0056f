package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	// readBufferSize is what each pipe reader holds between reads.
	readBufferSize = 64 << 10
	// maxLineBytes is where a line without a newline is cut and written in
	// parts, each with the prefix: nothing is lost and a child that never
	// writes a newline cannot make the supervisor hold unbounded memory.
	maxLineBytes = 8 << 20
)

// prefix returns "name   | " padded to width, coloured when color is set.
func prefix(name string, width, index int, color bool) []byte {
	if !color {
		return fmt.Appendf(nil, "%-*s | ", width, name)
	}
	// ANSI colours picked in turn by process index; plain red is left out
	// because it reads as an error.
	palette := [...]string{"36", "33", "32", "35", "34", "96", "93", "92", "95", "94"}
	return fmt.Appendf(nil, "\x1b[%sm%-*s |\x1b[0m ", palette[index%len(palette)], width, name)
}

// output writes whole lines from many children to one writer, so that lines
// never interleave mid-line.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

// write writes one complete line (prefix, text, newline) in a single call.
func (o *output) write(line []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	// A failing Out must not stall the child, whose pipe would fill up: the
	// line is dropped and reading goes on.
	_, _ = o.w.Write(line)
}

// copyLines reads r until end of file or error and writes every line to o
// behind prefix. A last line without a newline is written with one added.
func (o *output) copyLines(prefix []byte, r io.Reader) {
	br := bufio.NewReaderSize(r, readBufferSize)
	line := append(make([]byte, 0, len(prefix)+256), prefix...)
	emit := func() {
		for n := len(line); n > len(prefix) && (line[n-1] == '\n' || line[n-1] == '\r'); n = len(line) {
			line = line[:n-1]
		}
		o.write(append(line, '\n'))
		if cap(line) > readBufferSize {
			// Don't keep a huge line's buffer for the rest of the child's life.
			line = append(make([]byte, 0, len(prefix)+256), prefix...)
		} else {
			line = line[:len(prefix)]
		}
	}
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		switch {
		case err == nil:
			emit()
		case errors.Is(err, bufio.ErrBufferFull):
			if len(line)-len(prefix) >= maxLineBytes {
				emit()
			}
		default:
			if len(line) > len(prefix) {
				emit()
			}
			return
		}
	}
}
