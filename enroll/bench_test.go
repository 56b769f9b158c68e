package enroll

import "testing"

// BenchmarkExpect measures one decision per pod: with enablement selectors (1.27+, the
// selectors are compiled on every call) and with the 1.22–1.26 label rules.
func BenchmarkExpect(b *testing.B) {
	pod := newPod("shop", label("app", "cart"), annotation(AnnotationRedirection, "enabled"))
	for _, bc := range []struct {
		name string
		v    Version
	}{{"selectors-newest", Version{}}, {"labels-1.26", Version{1, 26, 0}}} {
		b.Run(bc.name, func(b *testing.B) {
			s := DefaultSettings()
			s.Version = bc.v
			b.ReportAllocs()
			for b.Loop() {
				if e := Expect(pod, ambientNS, s); e.State != Captured {
					b.Fatal(e)
				}
			}
		})
	}
}
