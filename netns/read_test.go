package netns

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func cpath(p string) []byte { return append([]byte(p), 0) }

// readSmall returns exactly the file, across buffer growth, up to and including its
// limit, and fails past it; what buf held before is kept.
func TestReadSmallSizes(t *testing.T) {
	dir := t.TempDir()
	const limit = 5000
	for _, size := range []int{0, 1, 511, 512, 513, 1024, 4095, limit - 1, limit, limit + 1, 3 * limit} {
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, start := range [][]byte{nil, make([]byte, 0, 16), []byte("kept")} {
			got, err := readSmall(cpath(p), start, limit)
			if size > limit {
				if !errors.Is(err, ErrTooLarge) || !bytes.Equal(got, start) {
					t.Fatalf("size %d: %v, %d bytes", size, err, len(got))
				}
				continue
			}
			if err != nil || !bytes.Equal(got, append(append([]byte(nil), start...), data...)) {
				t.Fatalf("size %d start %q: %v, got %d bytes", size, start, err, len(got))
			}
		}
	}
}

// A real single-record proc file is read whole.
func TestReadSmallProc(t *testing.T) {
	want, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	got, err := readSmall(cpath("/proc/self/cgroup"), nil, maxCgroupBytes)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v: %q vs %q", err, got, want)
	}
}

func TestOpenRegularRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	for p, kind := range map[string]string{fifo: "a FIFO", link: "a character device", dir: "a directory"} {
		_, err := readSmall(cpath(p), nil, 100)
		if !errors.Is(err, ErrNotRegularFile) || !bytes.Contains([]byte(err.Error()), []byte(kind)) {
			t.Errorf("%s: %v", p, err)
		}
	}
}
