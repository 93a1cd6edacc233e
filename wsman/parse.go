package wsman

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Parse reads one XML document into a Node tree, within the limits above.
// DTDs and processing instructions other than the XML declaration are
// refused: a SOAP message has none (SOAP 1.2 part 1 §5), and entities are
// a way to make a parser do unbounded work.
//
// It is a small parser of its own rather than encoding/xml's Decoder,
// which costs a provisioning more than any other step but the RSA
// operations; it accepts and builds what encoding/xml in strict mode would
// (namespaces resolved the same way, the same entities, the same
// character checks), and FuzzParseMatchesEncodingXML holds it to that.
func Parse(b []byte) (*Node, error) {
	var ps Parser
	return ps.Parse(b)
}

// A Parser is Parse with memory: its trees are carved from arrays it keeps
// and reuses, so that a connection answering one request after another
// allocates its nodes once rather than per message (the node arrays were a
// tenth of all a provisioning allocates). A tree it returns is good only
// until its next Parse, and a Parser parses one message at a time. The
// zero Parser is ready to use.
type Parser struct {
	slab    []Node
	kids    []*Node
	attrs   []xml.Attr
	pending []*Node
	ns      []binding
	stack   []open
	buf     []byte
}

// Parse is the package's Parse, into memory ps reuses; see Parser.
func (ps *Parser) Parse(b []byte) (*Node, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxEnvelopeSize)
	}
	// The slab is sized from the start tags the message can hold (every
	// "<" that does not open an end tag is at most one element), once per
	// Parser unless a larger message comes.
	n := min(bytes.Count(b, []byte("<"))-bytes.Count(b, []byte("</"))+1, maxNodes)
	if cap(ps.slab) < n {
		ps.slab, ps.kids = make([]Node, 0, n), make([]*Node, 0, n)
	}
	if ps.pending == nil {
		ps.pending, ps.ns, ps.stack = make([]*Node, 0, 16), make([]binding, 0, 8), make([]open, 0, 8)
	}
	p := parser{b: b, slab: ps.slab[:0], kids: ps.kids[:0], attrs: ps.attrs[:0],
		pending: ps.pending[:0], ns: ps.ns[:0], stack: ps.stack[:0], buf: ps.buf[:0]}
	root, err := p.document()
	// What grew is kept for the next message; chunks started when an
	// array was full (see startElement) are not.
	if cap(p.attrs) > cap(ps.attrs) {
		ps.attrs = p.attrs
	}
	ps.pending, ps.ns, ps.stack, ps.buf = p.pending, p.ns, p.stack, p.buf
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return root, nil
}

type parser struct {
	b     []byte
	i     int
	count int
	ns    []binding  // in scope, innermost last
	buf   []byte     // scratch for character data
	slab  []Node     // nodes are carved from here: usually one allocation per message
	kids  []*Node    // and the Children slices from here
	attrs []xml.Attr // and the Attr slices from here, a chunk at a time
	// changed: the last textBytes decoded something (an entity, a line
	// end), so its bytes are not the message's as they stand.
	changed bool
	// pending holds the children of the open elements, innermost last,
	// until their parent closes and they are copied into kids.
	pending []*Node
	stack   []open // the open elements, innermost last (document's)
}

type binding struct{ prefix, uri string }

// open is an element being read: its node, its raw name (to match the end
// tag), and how many bindings it declared.
type open struct {
	n     *Node
	raw   string
	binds int
	first int // where its children start in pending
	// text gathers the element's character data, which comments, CDATA
	// sections and child elements may split into any number of pieces:
	// appended here, it costs linear work (a string += per piece cost a
	// copy of all before it: 16,000 comments made 153 ms of one request).
	// A single piece as the message has it (most elements' text) is only
	// marked, textAt to textEnd, and copied once at close.
	text            []byte
	textAt, textEnd int
}

// addText adds a piece t of o's character data that textBytes read from
// the message at start.
func (p *parser) addText(o *open, t []byte, start int) {
	switch {
	case len(t) == 0:
	case o.text == nil && o.textEnd == o.textAt && !p.changed:
		o.textAt, o.textEnd = start, start+len(t)
	default:
		if o.text == nil && o.textEnd > o.textAt {
			o.text = append(make([]byte, 0, o.textEnd-o.textAt+len(t)), p.b[o.textAt:o.textEnd]...)
			o.textAt, o.textEnd = 0, 0
		}
		o.text = append(o.text, t...)
	}
}

// close ends element o: its children, gathered in pending, become its
// Children, carved from kids. (Should kids ever grow, slices carved before
// keep the old array: nothing is moved under them.)
func (p *parser) close(o open) {
	switch {
	case len(o.text) > 0:
		o.n.Text = intern(o.text)
	case o.textEnd > o.textAt:
		o.n.Text = intern(p.b[o.textAt:o.textEnd])
	}
	if c := p.pending[o.first:]; len(c) > 0 {
		at := len(p.kids)
		p.kids = append(p.kids, c...)
		o.n.Children = p.kids[at:len(p.kids):len(p.kids)]
	}
	p.pending = p.pending[:o.first]
	p.ns = p.ns[:len(p.ns)-o.binds]
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: "+format, append([]any{p.i}, args...)...)
}

func (p *parser) document() (*Node, error) {
	var root *Node
	stack := p.stack[:0]
	for p.i < len(p.b) {
		if p.b[p.i] != '<' {
			start := p.i
			t, err := p.textBytes(0, false)
			if err != nil {
				return nil, err
			}
			if len(stack) > 0 {
				p.addText(&stack[len(stack)-1], t, start)
			} else if len(bytes.TrimSpace(t)) != 0 {
				return nil, p.errorf("text outside the root element")
			}
			continue
		}
		switch {
		case p.has("<?"):
			if err := p.procInst(); err != nil {
				return nil, err
			}
		case p.has("<!--"):
			if err := p.comment(); err != nil {
				return nil, err
			}
		case p.has("<![CDATA["):
			p.i += len("<![CDATA[")
			start := p.i
			t, err := p.textBytes(0, true)
			if err != nil {
				return nil, err
			}
			if len(stack) > 0 {
				p.addText(&stack[len(stack)-1], t, start)
			} else if len(bytes.TrimSpace(t)) != 0 {
				return nil, p.errorf("text outside the root element")
			}
		case p.has("<!"):
			return nil, p.errorf("DTD or directive not allowed")
		case p.has("</"):
			p.i += 2
			raw, ok := p.nameBytes() // compared, not kept: no string made
			if !ok {
				return nil, p.errorf("expected element name after </")
			}
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != '>' {
				return nil, p.errorf("invalid characters between </%s and >", raw)
			}
			p.i++
			if len(stack) == 0 {
				return nil, p.errorf("unexpected end element </%s>", raw)
			}
			top := stack[len(stack)-1]
			if top.raw != string(raw) {
				return nil, p.errorf("element <%s> closed by </%s>", top.raw, raw)
			}
			p.close(top)
			stack = stack[:len(stack)-1]
		default:
			o, empty, err := p.startElement()
			if err != nil {
				return nil, err
			}
			p.count++
			if p.count > maxNodes || len(stack) >= maxDepth {
				return nil, fmt.Errorf("more than %d elements or deeper than %d", maxNodes, maxDepth)
			}
			if len(stack) == 0 {
				if root != nil {
					return nil, p.errorf("more than one root element")
				}
				root = o.n
			} else {
				p.pending = append(p.pending, o.n)
			}
			o.first = len(p.pending)
			if empty {
				p.close(o)
			} else {
				stack = append(stack, o)
			}
		}
	}
	p.stack = stack // its room is kept for the next message
	if len(stack) > 0 {
		return nil, p.errorf("unexpected EOF")
	}
	if root == nil {
		return nil, p.errorf("no element")
	}
	return root, nil
}

func (p *parser) has(s string) bool { return bytes.HasPrefix(p.b[p.i:], []byte(s)) }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func (p *parser) space() {
	for p.i < len(p.b) && isSpace(p.b[p.i]) {
		p.i++
	}
}

// isNameByte is encoding/xml's: ASCII name characters; bytes of
// multi-byte characters pass too.
func isNameByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '_' || c == ':' || c == '.' || c == '-' || c >= utf8.RuneSelf
}

func (p *parser) name() (string, bool) {
	b, ok := p.nameBytes()
	return intern(b), ok
}

// nameBytes reads a name and returns it in place.
func (p *parser) nameBytes() ([]byte, bool) {
	j := p.i
	for j < len(p.b) && isNameByte(p.b[j]) {
		j++
	}
	if j == p.i {
		return nil, false
	}
	// XML's NameStartChar, for ASCII: a letter, '_' or ':'.
	if c := p.b[p.i]; c < utf8.RuneSelf && !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || c == ':') {
		return nil, false
	}
	b := p.b[p.i:j]
	p.i = j
	return b, true
}

// split is encoding/xml's nsname: at most one colon, both sides non-empty
// for a prefix.
func split(s string) (xml.Name, bool) {
	if strings.Count(s, ":") > 1 {
		return xml.Name{}, false
	}
	space, local, ok := strings.Cut(s, ":")
	if !ok || space == "" || local == "" {
		return xml.Name{Local: s}, true
	}
	return xml.Name{Space: space, Local: local}, true
}

const (
	xmlnsPrefix = "xmlns"
	xmlPrefix   = "xml"
	xmlURL      = "http://www.w3.org/XML/1998/namespace"
)

func (p *parser) lookup(prefix string) (string, bool) {
	for i := len(p.ns) - 1; i >= 0; i-- {
		if p.ns[i].prefix == prefix {
			return p.ns[i].uri, true
		}
	}
	return "", false
}

// translate resolves a name's prefix as encoding/xml's Decoder does.
func (p *parser) translate(n *xml.Name, element bool) {
	switch {
	case n.Space == xmlnsPrefix:
		return
	case n.Space == "" && !element:
		return
	case n.Space == xmlPrefix:
		n.Space = xmlURL
	case n.Space == "" && n.Local == xmlnsPrefix:
		return
	}
	if v, ok := p.lookup(n.Space); ok {
		n.Space = v
	}
}

// addAttr appends a to the attribute chunk, whose attributes from at on
// are the element's being read; it returns where they now start. A full
// chunk is not grown (elements before keep theirs in it): a new one
// takes the element's attributes so far.
func (p *parser) addAttr(at int, a xml.Attr) int {
	if len(p.attrs) == cap(p.attrs) {
		cur := p.attrs[at:]
		next := make([]xml.Attr, len(cur), max(16, 2*len(cur)))
		copy(next, cur)
		p.attrs, at = next, 0
	}
	p.attrs = append(p.attrs, a)
	return at
}

func (p *parser) startElement() (open, bool, error) {
	p.i++ // '<'
	raw, ok := p.name()
	if !ok {
		return open{}, false, p.errorf("expected element name after <")
	}
	name, ok := split(raw)
	if !ok {
		return open{}, false, p.errorf("expected element name after <")
	}
	at := len(p.attrs) // this element's attributes go from here
	empty := false
	for {
		p.space()
		if p.i >= len(p.b) {
			return open{}, false, p.errorf("unexpected EOF")
		}
		c := p.b[p.i]
		if c == '/' {
			p.i++
			if p.i >= len(p.b) || p.b[p.i] != '>' {
				return open{}, false, p.errorf("expected /> in element")
			}
			p.i++
			empty = true
			break
		}
		if c == '>' {
			p.i++
			break
		}
		araw, ok := p.name()
		if !ok {
			return open{}, false, p.errorf("expected attribute name in element")
		}
		an, ok := split(araw)
		if !ok {
			return open{}, false, p.errorf("expected attribute name in element")
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '=' {
			return open{}, false, p.errorf("attribute name without = in element")
		}
		p.i++
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' && p.b[p.i] != '\'' {
			return open{}, false, p.errorf("unquoted or missing attribute value in element")
		}
		q := p.b[p.i]
		p.i++
		v, err := p.text(q, false)
		if err != nil {
			return open{}, false, err
		}
		at = p.addAttr(at, xml.Attr{Name: an, Value: v})
	}
	var attrs []xml.Attr
	if len(p.attrs) > at {
		attrs = p.attrs[at:len(p.attrs):len(p.attrs)]
	}
	binds := 0
	for _, a := range attrs {
		switch {
		case a.Name.Space == xmlnsPrefix:
			p.ns = append(p.ns, binding{a.Name.Local, a.Value})
			binds++
		case a.Name.Space == "" && a.Name.Local == xmlnsPrefix:
			p.ns = append(p.ns, binding{"", a.Value})
			binds++
		}
	}
	p.translate(&name, true)
	for i := range attrs {
		p.translate(&attrs[i].Name, false)
	}
	if len(p.slab) == cap(p.slab) {
		p.slab = make([]Node, 0, 32)
	}
	p.slab = append(p.slab, Node{Name: name, Attr: attrs})
	return open{n: &p.slab[len(p.slab)-1], raw: raw, binds: binds}, empty, nil
}

// text reads character data up to '<' (quote 0), or up to the closing
// quote of an attribute value, or (cdata) up to "]]>"; entities are
// decoded outside CDATA, line ends become '\n', and every character must
// be one XML allows.
func (p *parser) text(quote byte, cdata bool) (string, error) {
	b, err := p.textBytes(quote, cdata)
	return intern(b), err
}

// textBytes is text in the parser's scratch buffer, good until the next
// call.
func (p *parser) textBytes(quote byte, cdata bool) ([]byte, error) {
	p.buf = p.buf[:0]
	p.changed = false
	for {
		// Most text is plain ASCII (names, numbers, base64): take a run of
		// it in one step; everything else goes byte by byte below.
		if j := p.i + plainRun(p.b[p.i:], quote); j > p.i {
			p.buf = append(p.buf, p.b[p.i:j]...)
			p.i = j
		}
		if p.i >= len(p.b) {
			if quote == 0 && !cdata {
				return p.buf, nil
			}
			return nil, p.errorf("unexpected EOF")
		}
		c := p.b[p.i]
		switch {
		case cdata && c == ']' && p.has("]]>"):
			p.i += 3
			return p.buf, nil
		case !cdata && quote == 0 && c == '<':
			return p.buf, nil
		case !cdata && quote != 0 && c == quote:
			p.i++
			return p.buf, nil
		case !cdata && quote != 0 && c == '<':
			return nil, p.errorf("unescaped < inside quoted string")
		case !cdata && quote == 0 && c == ']' && p.has("]]>"):
			return nil, p.errorf("unescaped ]]> not in CDATA section")
		case !cdata && c == '&':
			if err := p.entity(); err != nil {
				return nil, err
			}
			p.changed = true
			continue
		case c == '\r':
			p.changed = true
			p.buf = append(p.buf, '\n')
			p.i++
			if p.i < len(p.b) && p.b[p.i] == '\n' {
				p.i++
			}
			continue
		}
		r, size := utf8.DecodeRune(p.b[p.i:])
		if r == utf8.RuneError && size == 1 {
			return nil, p.errorf("invalid UTF-8")
		}
		if !inCharacterRange(r) {
			return nil, p.errorf("illegal character code %U", r)
		}
		p.buf = append(p.buf, p.b[p.i:p.i+size]...)
		p.i += size
	}
}

// plainRun is the length of the run at the start of b of printable ASCII,
// tab and newline, stopping at every byte that text treats specially.
func plainRun(b []byte, quote byte) int {
	for i, c := range b {
		if (c < 0x20 && c != '\t' && c != '\n') || c >= 0x7f || c == '<' || c == '&' || c == ']' || c == quote {
			return i
		}
	}
	return len(b)
}

// entity decodes &name; or &#N; / &#xH; at p.i.
func (p *parser) entity() error {
	start := p.i
	p.i++
	end := bytes.IndexByte(p.b[p.i:], ';')
	if end < 0 || end > 16 {
		return p.errorf("invalid character entity %s", clip(string(p.b[start:min(len(p.b), start+16)])))
	}
	ref := string(p.b[p.i : p.i+end])
	p.i += end + 1
	var r rune
	switch ref {
	case "lt":
		r = '<'
	case "gt":
		r = '>'
	case "amp":
		r = '&'
	case "apos":
		r = '\''
	case "quot":
		r = '"'
	default:
		num, ok := strings.CutPrefix(ref, "#")
		if !ok || num == "" {
			return p.errorf("invalid character entity &%s;", clip(ref))
		}
		base := 10
		if h, isHex := strings.CutPrefix(num, "x"); isHex {
			num, base = h, 16
		}
		n, err := strconv.ParseUint(num, base, 64)
		if err != nil || n > utf8.MaxRune || !inCharacterRange(rune(n)) || !validDigits(num, base) {
			return p.errorf("invalid character entity &%s;", clip(ref))
		}
		r = rune(n)
	}
	p.buf = utf8.AppendRune(p.buf, r)
	return nil
}

// validDigits refuses what strconv takes but XML does not: signs and
// underscores.
func validDigits(s string, base int) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := '0' <= c && c <= '9' || base == 16 && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')
		if !ok {
			return false
		}
	}
	return true
}

func inCharacterRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

func (p *parser) comment() error {
	p.i += len("<!--")
	for p.i+1 < len(p.b) {
		if p.b[p.i] == '-' && p.b[p.i+1] == '-' {
			if p.i+2 < len(p.b) && p.b[p.i+2] == '>' {
				p.i += 3
				return nil
			}
			return p.errorf(`invalid sequence "--" not allowed in comments`)
		}
		p.i++
	}
	return p.errorf("unexpected EOF in comment")
}

// procInst reads <?target …?>: only the XML declaration is allowed, with
// version 1.0 and UTF-8 if it names them.
func (p *parser) procInst() error {
	p.i += 2
	target, ok := p.name()
	if !ok {
		return p.errorf("expected target name after <?")
	}
	end := bytes.Index(p.b[p.i:], []byte("?>"))
	if end < 0 {
		return p.errorf("unexpected EOF in processing instruction")
	}
	content := string(p.b[p.i : p.i+end])
	p.i += end + 2
	if target != "xml" {
		return p.errorf("processing instruction %q not allowed", clip(target))
	}
	if v := procInstParam("version", content); v != "" && v != "1.0" {
		return p.errorf("unsupported version %q; only version 1.0 is supported", clip(v))
	}
	if e := procInstParam("encoding", content); e != "" && !strings.EqualFold(e, "utf-8") {
		return p.errorf("unsupported encoding %q", clip(e))
	}
	return nil
}

// procInstParam finds param="value" (or 'value') in a processing
// instruction, as encoding/xml's procInst does.
func procInstParam(param, s string) string {
	param += "="
	lenp := len(param)
	i := 0
	var sep byte
	for i < len(s) {
		sub := s[i:]
		k := strings.Index(sub, param)
		if k < 0 || lenp+k >= len(sub) {
			return ""
		}
		i += lenp + k + 1
		if c := sub[lenp+k]; c == '\'' || c == '"' {
			sep = c
			break
		}
	}
	if sep == 0 {
		return ""
	}
	j := strings.IndexByte(s[i:], sep)
	if j < 0 {
		return ""
	}
	return s[i : i+j]
}
