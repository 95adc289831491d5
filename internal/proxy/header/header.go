// Package header holds the protocol-neutral header list the proxy passes
// between its codecs (HTTP/1.1, HTTP/2) and its router and filters.
//
// Names are stored lower-case, as HTTP/2 requires and as Envoy forwards
// HTTP/1.1 headers by default, so lookups are plain string compares.
// The list keeps wire order and duplicates, and is reused across requests.
package header

// Field is one header line. Name is lower-case ASCII.
type Field struct {
	Name  string
	Value string
}

// List is an ordered header list. The zero value is empty and ready to use.
type List []Field

// Get returns the first value of name, which must be lower-case.
func (l List) Get(name string) (string, bool) {
	for i := range l {
		if l[i].Name == name {
			return l[i].Value, true
		}
	}
	return "", false
}

// Value returns the first value of name, or "".
func (l List) Value(name string) string {
	v, _ := l.Get(name)
	return v
}

// Has reports whether name is present.
func (l List) Has(name string) bool {
	_, ok := l.Get(name)
	return ok
}

// Count returns how many lines carry name.
func (l List) Count(name string) int {
	n := 0
	for i := range l {
		if l[i].Name == name {
			n++
		}
	}
	return n
}

// Add appends a line.
func (l *List) Add(name, value string) {
	*l = append(*l, Field{Name: name, Value: value})
}

// Set replaces every line of name by one line with value, keeping the
// position of the first one.
func (l *List) Set(name, value string) {
	s := *l
	for i := range s {
		if s[i].Name == name {
			s[i].Value = value
			*l = append(s[:i+1], removeName(s[i+1:], name)...)
			return
		}
	}
	*l = append(s, Field{Name: name, Value: value})
}

// SetIfAbsent adds name only when it is not present.
func (l *List) SetIfAbsent(name, value string) {
	if !l.Has(name) {
		l.Add(name, value)
	}
}

// Del removes every line of name.
func (l *List) Del(name string) {
	*l = removeName(*l, name)
}

// Reset empties the list keeping its storage.
func (l *List) Reset() {
	clear(*l)
	*l = (*l)[:0]
}

// removeName filters s in place.
func removeName(s List, name string) List {
	out := s[:0]
	for _, f := range s {
		if f.Name != name {
			out = append(out, f)
		}
	}
	clear(s[len(out):])
	return out
}

// Lower returns s in ASCII lower case, without allocating when s already is.
func Lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}

// EqualFold reports whether a and b are equal under ASCII case folding.
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
