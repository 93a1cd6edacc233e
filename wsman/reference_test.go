package wsman

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
)

// parseReference is Parse as encoding/xml does it: the reference the
// hand-written parser is fuzzed against. It reads one XML document into a Node tree, within the limits above.
// DTDs and processing instructions other than the XML declaration are
// refused: a SOAP message has none (SOAP 1.2 part 1 §5), and entities are
// a way to make a parser do unbounded work.
func parseReference(b []byte) (*Node, error) {
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
