package podsim

import "testing"

// BenchmarkAddRemovePod measures one pod's life: cgroups in every hierarchy, sandbox process in a
// new netns with lo up, then kill, reap and rmdir.
func BenchmarkAddRemovePod(b *testing.B) {
	RequirePrivileged(b)
	s, err := New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	for b.Loop() {
		p, err := s.AddPod(PodSpec{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.RemovePod(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCaptureFlush measures making ztunnel's in-pod set (with DNS: 7 sockets, each made by a
// thread that enters the netns) and destroying it again with nsenter + ss -K.
func BenchmarkCaptureFlush(b *testing.B) {
	RequirePrivileged(b)
	s, err := New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	p, err := s.AddPod(PodSpec{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.Capture(p, true); err != nil {
			b.Fatal(err)
		}
		if err := s.Flush(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedirect measures Redirect alone in a dual-stack pod netns (one inNetns probe, then
// one nsenter + `ip -batch -` per address family); it is idempotent, so every iteration does the
// full work.
func BenchmarkRedirect(b *testing.B) {
	RequirePrivileged(b)
	s, err := New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	p, err := s.AddPod(PodSpec{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.Redirect(p); err != nil {
			b.Fatal(err)
		}
	}
}
