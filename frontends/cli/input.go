package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Inputs that can block forever — stdin, a pipe, a FIFO, a terminal, a socket — are read so
// that the read ends when the command's context does (SIGINT/SIGTERM): `sleep 60 | meshmedic
// logs analyze` stops at once. Regular files never block and are read as they are.

// input is one opened logs input.
type input struct {
	name string
	r    io.Reader
	c    io.Closer // nil for stdin (not ours to close)
}

// openInput opens path ("-" for stdin) for reading until ctx ends. Opening a FIFO waits for
// a writer: that wait ends with ctx too.
func openInput(ctx context.Context, path string, stdin io.Reader) (input, error) {
	if path == "-" {
		if stdin == nil {
			return input{name: "-", r: eofReader{}}, nil
		}
		f, ok := stdin.(*os.File)
		if !ok {
			return input{name: "-", r: stdin}, nil
		}
		r, stop := interruptible(ctx, f)
		return input{name: "-", r: r, c: closerFunc(stop)}, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return input{}, err
	}
	if st.IsDir() {
		return input{}, fmt.Errorf("%s: is a directory", path)
	}
	if st.Mode().IsRegular() {
		f, err := os.Open(path)
		if err != nil {
			return input{}, err
		}
		return input{name: path, r: f, c: f}, nil
	}
	f, err := openCtx(ctx, path)
	if err != nil {
		return input{}, err
	}
	r, stop := interruptible(ctx, f)
	return input{name: path, r: r, c: closerFunc(func() error { stop(); return f.Close() })}, nil
}

// openCtx opens path in a goroutine so that ctx can end a blocking open (a FIFO without a
// writer). A file opened after ctx ended is closed.
func openCtx(ctx context.Context, path string) (*os.File, error) {
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := os.Open(path)
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.f != nil {
				r.f.Close()
			}
		}()
		return nil, fmt.Errorf("opening %s: %w", path, ctx.Err())
	}
}

// interruptible returns a reader of f whose Read returns ctx's error once ctx ends, and a
// stop function that releases what it started. A file the runtime can poll (a pipe or FIFO
// opened by path) gets a read deadline set when ctx ends; any other (stdin inherited in
// blocking mode, a terminal) is read by a goroutine, the caller waiting on ctx instead.
func interruptible(ctx context.Context, f *os.File) (io.Reader, func() error) {
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		return f, func() error { return nil }
	}
	if f.SetReadDeadline(time.Time{}) == nil {
		stop := make(chan struct{})
		var once sync.Once
		go func() {
			select {
			case <-ctx.Done():
				_ = f.SetReadDeadline(time.Now())
			case <-stop:
			}
		}()
		return &deadlineReader{ctx: ctx, f: f}, func() error { once.Do(func() { close(stop) }); return nil }
	}
	return newPumpReader(ctx, f)
}

// deadlineReader turns the deadline set when ctx ended into ctx's error.
type deadlineReader struct {
	ctx context.Context
	f   *os.File
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	n, err := d.f.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && d.ctx.Err() != nil {
		return n, d.ctx.Err()
	}
	return n, err
}

// pumpReader reads r in a goroutine, one chunk at a time into one of two buffers, and
// hands the chunks over; Read gives up when ctx ends. The goroutine may stay blocked in
// r.Read until the process exits: nothing else can unblock a read of a blocking fd.
type pumpReader struct {
	ctx  context.Context
	full chan chunk
	free chan []byte
	cur  chunk
	off  int
	done bool
	quit chan struct{}
	once sync.Once
}

type chunk struct {
	buf []byte
	n   int
	err error
}

const pumpChunk = 64 << 10

func newPumpReader(ctx context.Context, r io.Reader) (io.Reader, func() error) {
	p := &pumpReader{ctx: ctx, full: make(chan chunk), free: make(chan []byte, 2), quit: make(chan struct{})}
	p.free <- make([]byte, pumpChunk)
	p.free <- make([]byte, pumpChunk)
	go p.pump(r)
	return p, func() error { p.once.Do(func() { close(p.quit) }); return nil }
}

func (p *pumpReader) pump(r io.Reader) {
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.quit:
			return
		case <-p.ctx.Done():
			return
		}
		n, err := r.Read(buf)
		select {
		case p.full <- chunk{buf: buf, n: n, err: err}:
		case <-p.quit:
			return
		case <-p.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (p *pumpReader) Read(b []byte) (int, error) {
	for {
		if p.off < p.cur.n {
			n := copy(b, p.cur.buf[p.off:p.cur.n])
			p.off += n
			return n, nil
		}
		if p.done {
			return 0, p.cur.err
		}
		if p.cur.buf != nil {
			p.free <- p.cur.buf // never blocks: two buffers, two slots
			p.cur.buf = nil
		}
		select {
		case <-p.ctx.Done():
			return 0, p.ctx.Err()
		case c := <-p.full:
			p.cur, p.off = c, 0
			if c.err != nil {
				p.done = true
				if p.cur.err == nil {
					p.cur.err = io.EOF
				}
			}
		}
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
