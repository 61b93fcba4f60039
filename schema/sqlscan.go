package schema

import (
	"errors"
	"strings"
)

// scanSQL returns the named parameters a statement uses and refuses what a
// function statement may not contain: more than one statement, and
// positional parameters (arguments bind by name).
func scanSQL(sql string) ([]string, error) {
	var params []string
	seen := map[string]bool{}
	ended := false // a top-level ';' was seen
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := strings.IndexByte(sql[i+1:], c)
			if j < 0 {
				return nil, errors.New("unterminated quoted string or identifier")
			}
			if ended {
				return nil, errMultiStatement
			}
			i += j + 1
		case c == '[':
			j := strings.IndexByte(sql[i+1:], ']')
			if j < 0 {
				return nil, errors.New("unterminated [identifier]")
			}
			if ended {
				return nil, errMultiStatement
			}
			i += j + 1
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return params, nil
			}
			i += j
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += j + 3
		case c == ';':
			ended = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		case ended:
			return nil, errMultiStatement
		case c == '?':
			return nil, errors.New("positional parameters (?) are not allowed; use :name")
		case (c == ':' || c == '@' || c == '$') && i+1 < len(sql) && isIdentStart(sql[i+1]):
			j := i + 1
			for j < len(sql) && isIdentChar(sql[j]) {
				j++
			}
			name := sql[i+1 : j]
			if !seen[name] {
				seen[name] = true
				params = append(params, name)
			}
			i = j - 1
		}
	}
	if strings.TrimSpace(strings.TrimRight(strings.TrimSpace(sql), ";")) == "" {
		return nil, errors.New("empty statement")
	}
	return params, nil
}

var errMultiStatement = errors.New("one statement per entry: list further statements as separate entries under sql")

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// ScanStatement checks an admin SQL statement the same way as a function
// statement and returns the parameters it names.
func ScanStatement(sql string) ([]string, error) { return scanSQL(sql) }

// FirstKeyword returns the first word of a statement, upper-cased, after
// leading whitespace and comments: "SELECT", "INSERT", "ATTACH" ...
func FirstKeyword(sql string) string {
	s := strings.TrimSpace(sql)
	for strings.HasPrefix(s, "--") || strings.HasPrefix(s, "/*") {
		if strings.HasPrefix(s, "--") {
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = strings.TrimSpace(s[i:])
		} else {
			i := strings.Index(s, "*/")
			if i < 0 {
				return ""
			}
			s = strings.TrimSpace(s[i+2:])
		}
	}
	end := 0
	for end < len(s) && isIdentStart(s[end]) {
		end++
	}
	return strings.ToUpper(s[:end])
}
