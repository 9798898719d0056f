package supervisor

import (
	"strings"
	"testing"
)

func TestPrefix(t *testing.T) {
	tests := []struct {
		name  string
		proc  string
		width int
		index int
		color bool
		want  string
	}{
		{"padded to the longest name", "catalog", 9, 0, false, "catalog   | "},
		{"longest name", "inventory", 9, 1, false, "inventory | "},
		{"coloured", "catalog", 7, 0, true, "\x1b[36mcatalog |\x1b[0m "},
		{"colours differ by index", "catalog", 7, 1, true, "\x1b[33mcatalog |\x1b[0m "},
		{"colours wrap around", "catalog", 7, 10, true, "\x1b[36mcatalog |\x1b[0m "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(prefix(tt.proc, tt.width, tt.index, tt.color)); got != tt.want {
				t.Errorf("prefix = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCopyLines(t *testing.T) {
	huge := strings.Repeat("x", maxLineBytes)
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"lines", "a\nbb\n", []string{"p| a\n", "p| bb\n"}},
		{"empty lines kept", "\n\n", []string{"p| \n", "p| \n"}},
		{"last line without newline", "a\nb", []string{"p| a\n", "p| b\n"}},
		{"carriage returns dropped", "a\r\nb\r\n", []string{"p| a\n", "p| b\n"}},
		{"nothing", "", nil},
		{"line longer than the read buffer", strings.Repeat("y", 3*readBufferSize) + "\n", []string{"p| " + strings.Repeat("y", 3*readBufferSize) + "\n"}},
		{"runaway line cut, not lost", huge + "tail\n", []string{"p| " + huge + "\n", "p| tail\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &writeRecorder{}
			(&output{w: w}).copyLines([]byte("p| "), strings.NewReader(tt.input))
			got := w.Writes()
			if len(got) != len(tt.want) {
				t.Fatalf("got %d writes, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("write %d = %.40q… (%d bytes), want %.40q… (%d bytes)", i, got[i], len(got[i]), tt.want[i], len(tt.want[i]))
				}
			}
		})
	}
}
