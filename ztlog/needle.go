package ztlog

import "bytes"

// needle is a substring searched for with the "rare byte" heuristic: scan (SIMD
// IndexByte) for the needle's least common byte, then verify around each hit. Log text
// is mostly lower-case letters, digits and a little punctuation, so a needle holding an
// upper-case letter or an apostrophe ("Connection refused", "can't find netns") is
// found or ruled out in about one pass of IndexByte; bytes.Index would instead stall
// on a common first byte.
type needle struct {
	s    []byte
	rare byte
	off  int
}

// byteRank orders bytes from rare (low) to common (high) in ztunnel log text. It is a
// heuristic only: a wrong guess costs speed, never correctness.
var byteRank = func() (r [256]uint8) {
	for i := range r {
		r[i] = 10 // other punctuation and non-ASCII: rare-ish
	}
	for c := 'A'; c <= 'Z'; c++ {
		r[c] = 5
	}
	common := "etaoinsrlcdum hpfgybwvkxjqz0123456789.=\":/-_"
	// The more common the byte, the higher its rank: position 0 ('e') is the most common.
	for i := 0; i < len(common); i++ {
		r[common[i]] = uint8(255 - i)
	}
	// Letters that are rare in these logs sit just above upper case.
	for _, c := range "jqzx" {
		r[c] = 20
	}
	r['\''] = 1
	return r
}()

func newNeedle(s []byte) needle {
	n := needle{s: s}
	best := 256
	for i, c := range s {
		if int(byteRank[c]) < best {
			best, n.rare, n.off = int(byteRank[c]), c, i
		}
	}
	return n
}

// in reports whether the needle occurs in b.
func (n *needle) in(b []byte) bool {
	if len(n.s) == 0 {
		return true
	}
	for i := n.off; i < len(b); {
		j := bytes.IndexByte(b[i:], n.rare)
		if j < 0 {
			return false
		}
		j += i
		st := j - n.off
		if st+len(n.s) > len(b) {
			return false
		}
		if bytes.Equal(b[st:st+len(n.s)], n.s) {
			return true
		}
		i = j + 1
	}
	return false
}
