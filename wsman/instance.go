package wsman

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// EPR is a WS-Addressing endpoint reference, as AMT uses them: an address,
// a resource URI and selectors.
type EPR struct {
	Address     string
	ResourceURI string
	Selectors   map[string]string
}

// Prop is one property: a name and its values (several for an array), or
// an endpoint reference.
type Prop struct {
	Name   string
	Values []string
	EPR    *EPR
}

// Instance is an element with ordered properties in one namespace: a CIM or
// AMT instance (Element = class name, NS = its resource URI), or a method's
// _INPUT or _OUTPUT.
type Instance struct {
	Element string
	NS      string
	Props   []Prop
}

// NewInstance returns an empty instance of the class at resourceURI.
func NewInstance(resourceURI string) *Instance {
	return &Instance{Element: ClassName(resourceURI), NS: resourceURI}
}

// ClassName is the last path element of a resource URI.
func ClassName(resourceURI string) string {
	return resourceURI[strings.LastIndexByte(resourceURI, '/')+1:]
}

// Set sets (or adds) a property; it returns the instance for chaining.
func (in *Instance) Set(name string, values ...string) *Instance {
	for i := range in.Props {
		if in.Props[i].Name == name {
			in.Props[i] = Prop{Name: name, Values: values}
			return in
		}
	}
	in.Props = append(in.Props, Prop{Name: name, Values: values})
	return in
}

// SetEPR sets a property to an endpoint reference.
func (in *Instance) SetEPR(name string, e EPR) *Instance {
	in.Props = append(in.Props, Prop{Name: name, EPR: &e})
	return in
}

// Get returns the first value of a property and whether it is present.
func (in *Instance) Get(name string) (string, bool) {
	if in == nil {
		return "", false
	}
	for _, p := range in.Props {
		if p.Name == name && len(p.Values) > 0 {
			return p.Values[0], true
		}
	}
	return "", false
}

// All returns every value of a property.
func (in *Instance) All(name string) []string {
	if in == nil {
		return nil
	}
	for _, p := range in.Props {
		if p.Name == name {
			return p.Values
		}
	}
	return nil
}

// Ref returns a property's endpoint reference, or nil.
func (in *Instance) Ref(name string) *EPR {
	if in == nil {
		return nil
	}
	for _, p := range in.Props {
		if p.Name == name && p.EPR != nil {
			return p.EPR
		}
	}
	return nil
}

// Uint reads a property as an unsigned integer.
func (in *Instance) Uint(name string) (uint64, error) {
	v, ok := in.Get(name)
	if !ok {
		return 0, fmt.Errorf("wsman: %s has no %s", in.Element, name)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("wsman: %s.%s = %q: %w", in.Element, name, clip(v), err)
	}
	return n, nil
}

// XML renders the instance with the prefix "h", declared on its element,
// for the body of a request (Marshal declares only a, b, c, g and t).
func (in *Instance) XML() string {
	var b bytes.Buffer
	b.Grow(in.xmlSize())
	in.xmlTo(&b)
	return b.String()
}

// xmlTo writes what XML returns.
func (in *Instance) xmlTo(b *bytes.Buffer) {
	b.WriteString(`<h:`)
	b.WriteString(in.Element)
	b.WriteString(` xmlns:h="`)
	escape(b, in.NS)
	b.WriteString(`">`)
	in.writeProps(b)
}

// xmlSize is about how long XML's answer is: exact but for escapes and
// references, whose selectors are guessed at.
func (in *Instance) xmlSize() int {
	n := len(`<h: xmlns:h=""></h:>`) + 2*len(in.Element) + len(in.NS)
	for _, p := range in.Props {
		tags := len(`<h:></h:>`) + 2*len(p.Name)
		if p.EPR != nil {
			n += tags + len(`<b:Address></b:Address><b:ReferenceParameters><c:ResourceURI></c:ResourceURI></b:ReferenceParameters>`) +
				len(p.EPR.Address) + len(p.EPR.ResourceURI) + 128
			continue
		}
		for _, v := range p.Values {
			n += tags + len(v)
		}
	}
	return n + 32 // a few escapes
}

// write renders the instance for an answer whose Envelope declares h as
// the instance's namespace.
func (in *Instance) write(b *bytes.Buffer) {
	tag(b, `<h:`, in.Element)
	in.writeProps(b)
}

func (in *Instance) writeProps(b *bytes.Buffer) {
	for _, p := range in.Props {
		if p.EPR != nil {
			tag(b, `<h:`, p.Name)
			p.EPR.write(b)
			tag(b, `</h:`, p.Name)
			continue
		}
		for _, v := range p.Values {
			tag(b, `<h:`, p.Name)
			escape(b, v)
			tag(b, `</h:`, p.Name)
		}
	}
	tag(b, `</h:`, in.Element)
}

// write renders the reference; b and c are declared on the Envelope.
func (e *EPR) write(b *bytes.Buffer) {
	b.WriteString(`<b:Address>`)
	escape(b, e.Address)
	b.WriteString(`</b:Address><b:ReferenceParameters><c:ResourceURI>`)
	escape(b, e.ResourceURI)
	b.WriteString(`</c:ResourceURI>`)
	if len(e.Selectors) > 0 {
		writeSelectors(b, `<c:SelectorSet>`, e.Selectors)
	}
	b.WriteString(`</b:ReferenceParameters>`)
}

// InstanceFromNode reads an instance (or a method's input or output) from
// its element. Child elements with children of their own are read as
// endpoint references.
func InstanceFromNode(n *Node) *Instance {
	in := &Instance{Element: n.Name.Local, NS: n.Name.Space, Props: make([]Prop, 0, len(n.Children))}
	// Every child's value is carved from one array: a property of one
	// value takes a slice of it capped at that value, so that a second
	// value appended (a repeated element) copies rather than overwrites.
	vals := make([]string, 0, len(n.Children))
	for _, c := range n.Children {
		if len(c.Children) > 0 {
			in.Props = append(in.Props, Prop{Name: c.Name.Local, EPR: eprFromNode(c)})
			continue
		}
		v := strings.TrimSpace(c.Text)
		if i := len(in.Props) - 1; i >= 0 && in.Props[i].Name == c.Name.Local && in.Props[i].EPR == nil {
			in.Props[i].Values = append(in.Props[i].Values, v)
			continue
		}
		vals = append(vals, v)
		in.Props = append(in.Props, Prop{Name: c.Name.Local, Values: vals[len(vals)-1 : len(vals) : len(vals)]})
	}
	return in
}

func eprFromNode(n *Node) *EPR {
	e := &EPR{Address: n.Value("Address")}
	rp := n.Child("ReferenceParameters")
	e.ResourceURI = rp.Value("ResourceURI")
	if ss := rp.Child("SelectorSet"); ss != nil {
		e.Selectors = selectors(ss)
	}
	return e
}
