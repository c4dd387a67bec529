package observability

import "strings"

// 11b. Sensitive keys in front of a value without '=' or ':' between them,
// in shapes that say plainly that the word after the key is its value:
//
//   - a command-line flag and its argument: "--token X", "--client-secret X"
//     ("--token=X" is a key/value of mask 11); a value starting with '-' is
//     the next flag, and "--no-password" is a switch;
//   - a key and its value separated by tabs (tab-separated tables, .netrc
//     files written with tabs): "password<TAB>X";
//   - an XML element: "<password>X</password>", "<db:password a="1">X<",
//     "<password><![CDATA[X]]></password>".
//
// A key and its value separated by spaces alone ("password X") is not
// masked: in prose it is nearly always something else ("password changed",
// "Enter passphrase for key").

func (s *Sanitizer) maskSpacedKeys(in string) string {
	w := rewriter{src: in}
	var kbuf [64]byte
	// Flags.
	for i := strings.Index(in, "--"); i >= 0; {
		next := i + 2
		if i >= w.last && (i == 0 || in[i-1] == ' ' || in[i-1] == '\t' || in[i-1] == '\n' || in[i-1] == '"' || in[i-1] == '\'') {
			ke := i + 2
			for ke < len(in) && charClass[in[ke]]&clKey != 0 {
				ke++
			}
			key := in[i+2 : ke]
			if ke-i-2 >= 4 && ke-i-2 <= 128 && isAlnum(in[i+2]) && !strings.HasPrefix(key, "no-") &&
				ke < len(in) && (in[ke] == ' ' || in[ke] == '\t') && s.sensitiveKey(key, &kbuf) {
				v := ke
				for v < len(in) && (in[v] == ' ' || in[v] == '\t') {
					v++
				}
				if v < len(in) && in[v] != '-' && in[v] != '\n' {
					if rs, re, repl, ok := s.sensitiveValue(in, v, false, false); ok {
						w.replace(rs, re, repl)
						next = re
					}
				}
			}
		}
		j := strings.Index(in[next:], "--")
		if j < 0 {
			break
		}
		i = next + j
	}
	out := w.result()
	// Tabs.
	if strings.IndexByte(out, '\t') >= 0 {
		out = s.maskTabbedKeys(out, &kbuf)
	}
	// XML elements.
	if strings.IndexByte(out, '<') >= 0 {
		out = s.maskXMLElements(out, &kbuf)
	}
	return out
}

// maskTabbedKeys masks "key<TAB>value".
func (s *Sanitizer) maskTabbedKeys(in string, kbuf *[64]byte) string {
	w := rewriter{src: in}
	for t := strings.IndexByte(in, '\t'); t >= 0; {
		next := t + 1
		k := t
		for k > w.last && charClass[in[k-1]]&clKey != 0 {
			k--
		}
		if k < t && t-k <= 128 && (k == 0 || in[k-1] == ' ' || in[k-1] == '\t' || in[k-1] == '\n') && s.sensitiveKey(in[k:t], kbuf) {
			v := t
			for v < len(in) && (in[v] == '\t' || in[v] == ' ') {
				v++
			}
			if v < len(in) && in[v] != '\n' && in[v] != '\r' {
				if rs, re, repl, ok := s.sensitiveValue(in, v, false, false); ok {
					w.replace(rs, re, repl)
					next = re
				}
			}
		}
		j := strings.IndexByte(in[next:], '\t')
		if j < 0 {
			break
		}
		t = next + j
	}
	return w.result()
}

// maskXMLElements masks the text of elements with a sensitive name, up to
// the next '<' on its line (or the end of a CDATA section).
func (s *Sanitizer) maskXMLElements(in string, kbuf *[64]byte) string {
	w := rewriter{src: in}
	for lt := strings.IndexByte(in, '<'); lt >= 0; {
		next := lt + 1
		ne := lt + 1
		for ne < len(in) && (charClass[in[ne]]&clKey != 0 || in[ne] == ':') {
			ne++
		}
		if ne > lt+1 && ne-lt-1 <= 128 && ne < len(in) && isAlnum(in[lt+1]) {
			// The start tag's end: attributes may come first.
			gt := -1
			if in[ne] == '>' {
				gt = ne
			} else if in[ne] == ' ' {
				for k := ne; k < len(in) && k < ne+512; k++ {
					if c := in[k]; c == '>' {
						gt = k
						break
					} else if c == '<' || c == '\n' {
						break
					}
				}
			}
			name := in[lt+1 : ne]
			if c := strings.LastIndexByte(name, ':'); c >= 0 {
				name = name[c+1:] // the local name: "db:password"
			}
			if gt > 0 && in[gt-1] != '/' && name != "" && s.sensitiveKey(name, kbuf) {
				v, e := gt+1, gt+1
				if strings.HasPrefix(in[v:], "<![CDATA[") {
					v += len("<![CDATA[")
					if c := strings.Index(in[v:], "]]>"); c >= 0 {
						e = v + c
					} else {
						e = lineEnd(in, v)
					}
				} else {
					for e < len(in) && in[e] != '<' && in[e] != '\n' && in[e] != '\r' {
						e++
					}
				}
				if rs, re, repl, ok := s.redactSpan(in, v, e, phRedacted); ok {
					w.replace(rs, re, repl)
					next = re
				} else {
					next = max(next, e)
				}
			}
		}
		j := strings.IndexByte(in[next:], '<')
		if j < 0 {
			break
		}
		lt = next + j
	}
	return w.result()
}
