package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrMalformed is wrapped by every error about a message that cannot be
// read: not XML, not a SOAP envelope, or past the limits.
var ErrMalformed = errors.New("wsman: malformed message")

// Limits on what a message may make the parser do. AMT 5 advertises a
// 153,600-byte envelope; depth and element count keep hostile XML cheap.
const (
	MaxEnvelopeSize = 153600
	maxDepth        = 32
	maxNodes        = 4096
)

// Node is one XML element: its name, attributes, text and children. A
// message is parsed into a tree of them once, and every layer (envelope,
// header, method input, instance) reads the tree.
type Node struct {
	Name     xml.Name
	Attr     []xml.Attr
	Text     string
	Children []*Node
}

// Child returns the first child with local name local (any namespace), or
// nil.
func (n *Node) Child(local string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name.Local == local {
			return c
		}
	}
	return nil
}

// ChildNS returns the first child with the name {space}local, or nil.
func (n *Node) ChildNS(space, local string) *Node {
	if n == nil {
		return nil
	}
	for _, c := range n.Children {
		if c.Name.Local == local && c.Name.Space == space {
			return c
		}
	}
	return nil
}

// Value is the trimmed text of the first child named local, or "".
func (n *Node) Value(local string) string {
	if c := n.Child(local); c != nil {
		return strings.TrimSpace(c.Text)
	}
	return ""
}

// Values are the trimmed texts of every child named local.
func (n *Node) Values(local string) []string {
	if n == nil {
		return nil
	}
	var out []string
	for _, c := range n.Children {
		if c.Name.Local == local {
			out = append(out, strings.TrimSpace(c.Text))
		}
	}
	return out
}

// AttrValue returns the attribute with local name local, or "".
func (n *Node) AttrValue(local string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// Parse reads one XML document into a Node tree, within the limits above.
// DTDs and processing instructions other than the XML declaration are
// refused: a SOAP message has none (SOAP 1.2 part 1 §5), and entities are
// a way to make a parser do unbounded work.
func Parse(b []byte) (*Node, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxEnvelopeSize)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var root *Node
	var stack []*Node
	count := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			count++
			if count > maxNodes || len(stack) >= maxDepth {
				return nil, fmt.Errorf("%w: more than %d elements or deeper than %d", ErrMalformed, maxNodes, maxDepth)
			}
			n := &Node{Name: t.Name, Attr: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, fmt.Errorf("%w: more than one root element", ErrMalformed)
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(t)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, fmt.Errorf("%w: text outside the root element", ErrMalformed)
			}
		case xml.Directive:
			return nil, fmt.Errorf("%w: DTD or directive not allowed", ErrMalformed)
		case xml.ProcInst:
			if t.Target != "xml" {
				return nil, fmt.Errorf("%w: processing instruction %q not allowed", ErrMalformed, t.Target)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: no element", ErrMalformed)
	}
	return root, nil
}

// escape writes s as XML character data.
func escape(w *bytes.Buffer, s string) {
	_ = xml.EscapeText(w, []byte(s))
}
