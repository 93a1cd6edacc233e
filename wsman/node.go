package wsman

import (
	"bytes"
	"encoding/xml"
	"errors"
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

// escape writes s as XML character data. Plain printable ASCII, which is
// nearly every value AMT sends, is written as it is.
func escape(w *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '&' || c == '\'' || c == '"' {
			_ = xml.EscapeText(w, []byte(s))
			return
		}
	}
	w.WriteString(s)
}
