// Package wsman is WS-Management as Intel AMT 5 speaks it at /wsman: SOAP
// 1.2 envelopes with WS-Addressing 2004/08 headers, the transfer (Get, Put,
// Create, Delete), enumeration (Enumerate, Pull) and custom-method actions,
// SOAP faults, and AMT/CIM instances as flat property lists. The device's
// server and the SCS's client share one parser and one writer.
package wsman

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// Namespaces (DSP0226 1.0 and the 2004 WS-* drafts AMT implements).
const (
	NSSoap        = "http://www.w3.org/2003/05/soap-envelope"
	NSAddressing  = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
	NSWSMan       = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
	NSTransfer    = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
	NSEnumeration = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
	NSXSI         = "http://www.w3.org/2001/XMLSchema-instance"

	Anonymous = NSAddressing + "/role/anonymous"

	// Resource URI prefixes of the AMT and CIM classes.
	AMTSchema = "http://intel.com/wbem/wscim/1/amt-schema/1/"
	CIMSchema = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/"
	IPSSchema = "http://intel.com/wbem/wscim/1/ips-schema/1/"
)

// Actions.
const (
	ActionGet       = NSTransfer + "/Get"
	ActionPut       = NSTransfer + "/Put"
	ActionCreate    = NSTransfer + "/Create"
	ActionDelete    = NSTransfer + "/Delete"
	ActionEnumerate = NSEnumeration + "/Enumerate"
	ActionPull      = NSEnumeration + "/Pull"
	ActionRelease   = NSEnumeration + "/Release"
	ActionFault     = NSAddressing + "/fault"
)

// Header is what the SOAP header of a request or a response says.
type Header struct {
	To          string
	ResourceURI string
	Action      string
	MessageID   string
	RelatesTo   string
	ReplyTo     string
	Selectors   map[string]string
}

// Envelope is a parsed message.
type Envelope struct {
	Header Header
	// Body is the first element inside s:Body, or nil for an empty body.
	Body *Node
}

// ParseEnvelope reads a SOAP 1.2 envelope.
func ParseEnvelope(b []byte) (*Envelope, error) {
	var ps Parser
	return ps.ParseEnvelope(b)
}

// ParseEnvelope is the package's ParseEnvelope into memory ps reuses: the
// envelope's Body is good only until ps's next parse (see Parser).
func (ps *Parser) ParseEnvelope(b []byte) (*Envelope, error) {
	root, err := ps.Parse(b)
	if err != nil {
		return nil, err
	}
	if root.Name.Space != NSSoap || root.Name.Local != "Envelope" {
		return nil, fmt.Errorf("%w: root element {%s}%s, want a SOAP 1.2 Envelope", ErrMalformed, clip(root.Name.Space), clip(root.Name.Local))
	}
	hdr := root.ChildNS(NSSoap, "Header")
	body := root.ChildNS(NSSoap, "Body")
	if body == nil {
		return nil, fmt.Errorf("%w: envelope without a Body", ErrMalformed)
	}
	e := &Envelope{}
	if hdr != nil {
		h := &e.Header
		h.To = hdr.Value("To")
		h.ResourceURI = hdr.Value("ResourceURI")
		h.Action = hdr.Value("Action")
		h.MessageID = hdr.Value("MessageID")
		h.RelatesTo = hdr.Value("RelatesTo")
		h.ReplyTo = hdr.Child("ReplyTo").Value("Address")
		if ss := hdr.Child("SelectorSet"); ss != nil {
			h.Selectors = selectors(ss)
		}
	}
	if len(body.Children) > 0 {
		e.Body = body.Children[0]
	}
	return e, nil
}

func selectors(ss *Node) map[string]string {
	m := make(map[string]string, len(ss.Children))
	for _, s := range ss.Children {
		if s.Name.Local == "Selector" {
			m[s.AttrValue("Name")] = strings.TrimSpace(s.Text)
		}
	}
	return m
}

// Marshal writes an envelope: the header h and body, an XML fragment
// that declares its own namespaces (the builders in this package do).
func Marshal(h Header, body string) []byte { return marshalRequest(h, textBody(body)) }

// marshalRequest is Marshal with the body written by body, in a buffer
// sized once for header and body.
func marshalRequest(h Header, body requestBody) []byte {
	var b bytes.Buffer
	b.Grow(h.size("") + body.size)
	marshalTo(&b, h, "", body.write)
	return b.Bytes()
}

// envelopeFixed is what every envelope holds apart from its header values
// and body: the declaration, the namespaces and the fixed tags.
const envelopeFixed = len(`<?xml version="1.0" encoding="UTF-8"?>`+`<a:Envelope xmlns:a="`+NSSoap+`" xmlns:b="`+NSAddressing+
	`" xmlns:c="`+NSWSMan+`" xmlns:g="`+NSEnumeration+`" xmlns:t="`+NSTransfer+`" xmlns:h="`+
	`"><a:Header>`+`<b:ReplyTo><b:Address a:mustUnderstand="true">`+`</b:Address></b:ReplyTo>`+
	`</a:Header><a:Body>`+`</a:Body></a:Envelope>`) + 5*len(`<b:RelatesTo></b:RelatesTo>`)

// size is about how long an envelope with header h is, without its body:
// sized once, the buffer is not grown and copied as it is written (a
// fixed guess of 768 bytes was short of every header, and the growth was
// 60 KB of allocation per provisioning).
func (h Header) size(ns string) int {
	n := envelopeFixed + len(ns) + len(h.To) + len(h.ReplyTo) + len(h.RelatesTo) + len(h.Action) + len(h.MessageID) + len(h.ResourceURI)
	for k, v := range h.Selectors {
		n += len(`<c:Selector Name=""></c:Selector>`) + len(k) + len(v)
	}
	if len(h.Selectors) > 0 {
		n += len(`<c:SelectorSet></c:SelectorSet>`)
	}
	return n + 64 // room for a few escapes
}

// marshalTo appends an envelope to b, its body written by body (nil for
// an empty one): a server writes its answer straight into the buffer
// that goes on the wire.
//
// As AMT does, the Envelope declares every prefix the answer uses (a SOAP,
// b addressing, c WS-MAN, g enumeration, t transfer, and h the class
// namespace ns when there is one), so that no element of the body carries
// an attribute it did not need: consoles with hand-written XML readers
// (MeshCentral's among them) take an element with attributes for a value
// with attributes.
func marshalTo(b *bytes.Buffer, h Header, ns string, body func(*bytes.Buffer)) {
	b.Grow(h.size(ns))
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>`)
	b.WriteString(`<a:Envelope xmlns:a="` + NSSoap + `" xmlns:b="` + NSAddressing + `" xmlns:c="` + NSWSMan +
		`" xmlns:g="` + NSEnumeration + `" xmlns:t="` + NSTransfer)
	if ns != "" {
		b.WriteString(`" xmlns:h="`)
		escape(b, ns)
	}
	b.WriteString(`"><a:Header>`)
	element(b, "b:To", h.To)
	if h.ReplyTo != "" {
		b.WriteString(`<b:ReplyTo><b:Address a:mustUnderstand="true">`)
		escape(b, h.ReplyTo)
		b.WriteString(`</b:Address></b:ReplyTo>`)
	}
	element(b, "b:RelatesTo", h.RelatesTo)
	element(b, "b:Action", h.Action)
	element(b, "b:MessageID", h.MessageID)
	element(b, "c:ResourceURI", h.ResourceURI)
	if len(h.Selectors) > 0 {
		writeSelectors(b, "<c:SelectorSet>", h.Selectors)
	}
	b.WriteString(`</a:Header><a:Body>`)
	if body != nil {
		body(b)
	}
	b.WriteString(`</a:Body></a:Envelope>`)
}

// element writes <name>v</name>, or nothing for an empty v.
func element(b *bytes.Buffer, name, v string) {
	if v == "" {
		return
	}
	tag(b, "<", name)
	escape(b, v)
	tag(b, "</", name)
}

// tag writes open+name+">" without building the string.
func tag(b *bytes.Buffer, open, name string) {
	b.WriteString(open)
	b.WriteString(name)
	b.WriteByte('>')
}

// writeSelectors writes a c:SelectorSet (open is its start tag, which may
// declare c) with the selectors in name order.
func writeSelectors(b *bytes.Buffer, open string, sel map[string]string) {
	names := make([]string, 0, len(sel))
	for k := range sel {
		names = append(names, k)
	}
	sort.Strings(names)
	b.WriteString(open)
	for _, k := range names {
		b.WriteString(`<c:Selector Name="`)
		escape(b, k)
		b.WriteString(`">`)
		escape(b, sel[k])
		b.WriteString("</c:Selector>")
	}
	b.WriteString("</c:SelectorSet>")
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// CallName names the call a request makes, as scenarios and logs name
// it: the method of an invoke ("CommitChanges"), or the verb and the class
// of a transfer or an enumeration ("Get:AMT_GeneralSettings",
// "Enumerate:AMT_PublicKeyCertificate").
func (h Header) CallName() string {
	verb := ""
	switch h.Action {
	case ActionGet:
		verb = "Get"
	case ActionPut:
		verb = "Put"
	case ActionCreate:
		verb = "Create"
	case ActionDelete:
		verb = "Delete"
	case ActionEnumerate:
		verb = "Enumerate"
	case ActionPull:
		verb = "Pull"
	case ActionRelease:
		verb = "Release"
	default:
		return h.Action[strings.LastIndexByte(h.Action, '/')+1:]
	}
	return verb + ":" + ClassName(h.ResourceURI)
}
