package ztlog

import (
	"bytes"
	"fmt"
)

// Content is what the first bytes of a stream look like. Only ContentText is read as a
// log; anything else yields no records, and the reader says so (Result.Warnings) instead
// of reporting nothing without a word.
type Content string

const (
	ContentText  Content = "text"
	ContentGzip  Content = "gzip"
	ContentZstd  Content = "zstd"
	ContentBzip2 Content = "bzip2"
	ContentXz    Content = "xz"
	// ContentUTF16 is UTF-16 text (a BOM, or NUL bytes every other byte): what Windows
	// PowerShell's `>` writes.
	ContentUTF16 Content = "utf-16"
	// ContentBinary has NUL bytes or mostly control bytes.
	ContentBinary Content = "binary"
)

// sniffLen is how much of a stream Sniff looks at.
const sniffLen = 512

// Sniff classifies the first bytes of a stream (up to sniffLen of them are looked at).
// Invalid UTF-8 alone is text: real logs hold mojibake and cut multi-byte characters.
func Sniff(b []byte) Content {
	if len(b) > sniffLen {
		b = b[:sniffLen]
	}
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return ContentGzip
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return ContentZstd
	case bytes.HasPrefix(b, []byte("BZh")) && len(b) > 3 && b[3] >= '1' && b[3] <= '9':
		return ContentBzip2
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return ContentXz
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}), bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		return ContentUTF16
	}
	if len(b) == 0 {
		return ContentText
	}
	var nulEven, nulOdd, control int
	for i, c := range b {
		switch {
		case c == 0:
			if i%2 == 0 {
				nulEven++
			} else {
				nulOdd++
			}
		case c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1b, c == 0x7f:
			control++
		}
	}
	half := (len(b) + 1) / 2
	le := nulOdd*10 >= half*8 && nulEven*10 <= half
	be := nulEven*10 >= half*8 && nulOdd*10 <= half
	if half >= 4 && (le || be) {
		return ContentUTF16 // ASCII as UTF-16LE (NUL at odd offsets) or BE (even)
	}
	if nulEven+nulOdd > 0 || control*10 > len(b) {
		return ContentBinary
	}
	return ContentText
}

// Warning is something about an input that a person should know because it explains an
// empty or partial result.
type Warning struct {
	File    string  `json:"file"`
	Content Content `json:"content"`
	Message string  `json:"message"`
}

// contentWarning explains a non-text input, or returns nil for text.
func contentWarning(file string, c Content) *Warning {
	var hint string
	switch c {
	case ContentText, "":
		return nil
	case ContentGzip:
		hint = "decompress it first: zcat FILE | meshmedic logs analyze"
	case ContentZstd:
		hint = "decompress it first: zstdcat FILE | meshmedic logs analyze"
	case ContentBzip2:
		hint = "decompress it first: bzcat FILE | meshmedic logs analyze"
	case ContentXz:
		hint = "decompress it first: xzcat FILE | meshmedic logs analyze"
	case ContentUTF16:
		hint = "convert it first: iconv -f UTF-16 -t UTF-8 FILE | meshmedic logs analyze"
	default:
		hint = "is this a ztunnel log? records were looked for all the same"
	}
	return &Warning{File: file, Content: c, Message: fmt.Sprintf("%s: %s input, not text: %s", file, c, hint)}
}
