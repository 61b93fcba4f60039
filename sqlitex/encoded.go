package sqlitex

import (
	"encoding/base64"
	"unicode/utf8"
)

// rowOverhead is a row's framing in JSON: brackets and separators.
const rowOverhead = 4

// encodedLen is the most bytes v takes in any of Lunora's encodings of a
// result: JSON (the HTTP API) escapes control characters as \u00XX (six
// bytes for one) and encodes blobs in base64; protobuf is never larger.
// Counting raw bytes instead let a result of control characters pass the
// bound and grow six times on the wire.
func encodedLen(v any) int {
	switch x := v.(type) {
	case nil:
		return 5
	case string:
		return jsonStringLen(x) + 1
	case []byte:
		return base64.StdEncoding.EncodedLen(len(x)) + 3
	case bool:
		return 6
	}
	return 25 // int64, float64 and time values
}

// jsonStringLen is the length of s as encoding/json writes it (with HTML
// escaping, its default): quotes, two-byte escapes for \" \\ \n \r \t,
// six-byte \u escapes for other control characters, <, >, &, U+2028,
// U+2029 and each byte of invalid UTF-8 (as \ufffd).
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
