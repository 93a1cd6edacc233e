// Package eoi is the legacy Intel AMT SOAP interface (External Operations
// Interface) that AMT 5 still serves beside WS-Management: SOAP 1.1, one
// URL per service, a namespace per service
// (http://schemas.intel.com/platform/client/<Service>/2004/01), and a
// StatusCode with the PT_STATUS numbers in every answer. It parses requests
// with the same bounded XML reader as wsman, and writes answers and
// faults; the device and management tools share it.
package eoi

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"

	"github.com/amtsim/amtsim/wsman"
)

// NSSoap11 is the SOAP 1.1 envelope namespace.
const NSSoap11 = "http://schemas.xmlsoap.org/soap/envelope/"

// The services, by the name in their URL and namespace.
const (
	SecurityAdministration = "SecurityAdministration"
	GeneralInfo            = "GeneralInfo"
	NetworkAdministration  = "NetworkAdministration"
	RemoteControl          = "RemoteControl"
	NetworkTime            = "NetworkTime"
)

// Services lists the services a device serves.
var Services = []string{SecurityAdministration, GeneralInfo, NetworkAdministration, RemoteControl, NetworkTime}

// Namespace is a service's XML namespace.
func Namespace(service string) string {
	return "http://schemas.intel.com/platform/client/" + service + "/2004/01"
}

// Path is a service's URL path.
func Path(service string) string { return "/" + service + "Service" }

// ServiceAt returns the service served at path, or "".
func ServiceAt(path string) string {
	for _, s := range Services {
		if Path(s) == path {
			return s
		}
	}
	return ""
}

// ErrMalformed is wrapped by every request that cannot be read.
var ErrMalformed = errors.New("eoi: malformed request")

// Request is one call: the service (from the URL), the method (the body's
// element) and its parameters.
type Request struct {
	Service string
	Method  string
	Params  *wsman.Node
}

// Param is the trimmed text of a parameter, "" when absent.
func (r *Request) Param(name string) string { return r.Params.Value(name) }

// ParseRequest reads a SOAP 1.1 request to the service at path.
func ParseRequest(path string, body []byte) (*Request, error) {
	svc := ServiceAt(path)
	if svc == "" {
		return nil, fmt.Errorf("%w: no service at %q", ErrMalformed, clip(path))
	}
	root, err := wsman.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if root.Name.Space != NSSoap11 || root.Name.Local != "Envelope" {
		return nil, fmt.Errorf("%w: root {%s}%s, want a SOAP 1.1 Envelope", ErrMalformed, clip(root.Name.Space), clip(root.Name.Local))
	}
	b := root.ChildNS(NSSoap11, "Body")
	if b == nil || len(b.Children) != 1 {
		return nil, fmt.Errorf("%w: the Body must hold exactly one call", ErrMalformed)
	}
	call := b.Children[0]
	if call.Name.Space != Namespace(svc) {
		return nil, fmt.Errorf("%w: %s is not in the %s namespace", ErrMalformed, clip(call.Name.Local), svc)
	}
	return &Request{Service: svc, Method: call.Name.Local, Params: call}, nil
}

// Field is one element of an answer: a value or nested fields.
type Field struct {
	Name     string
	Value    string
	Children []Field
}

// F is a value field.
func F(name, value string) Field { return Field{Name: name, Value: value} }

// Response is an answer: <Method>Response with StatusCode first.
type Response struct {
	Service string
	Method  string
	Status  uint32
	Fields  []Field
}

// Marshal writes the answer envelope.
func (r *Response) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="` + NSSoap11 +
		`" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:m="`)
	b.WriteString(Namespace(r.Service))
	b.WriteString(`"><SOAP-ENV:Body><m:` + r.Method + `Response><m:StatusCode>`)
	fmt.Fprint(&b, r.Status)
	b.WriteString(`</m:StatusCode>`)
	writeFields(&b, r.Fields)
	b.WriteString(`</m:` + r.Method + `Response></SOAP-ENV:Body></SOAP-ENV:Envelope>`)
	return b.Bytes()
}

func writeFields(b *bytes.Buffer, fs []Field) {
	for _, f := range fs {
		b.WriteString(`<m:` + f.Name + `>`)
		if f.Children != nil {
			writeFields(b, f.Children)
		} else {
			_ = xml.EscapeText(b, []byte(f.Value))
		}
		b.WriteString(`</m:` + f.Name + `>`)
	}
}

// Fault writes a SOAP 1.1 fault: code is "Client" (the request is wrong)
// or "Server".
func Fault(code, message string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="` + NSSoap11 +
		`"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>SOAP-ENV:` + code + `</faultcode><faultstring>`)
	_ = xml.EscapeText(&b, []byte(message))
	b.WriteString(`</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>`)
	return b.Bytes()
}

// Call builds a request envelope, as a tool sends it.
func Call(service, method string, params []Field) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="` + NSSoap11 + `" xmlns:m="`)
	b.WriteString(Namespace(service))
	b.WriteString(`"><SOAP-ENV:Body><m:` + method + `>`)
	writeFields(&b, params)
	b.WriteString(`</m:` + method + `></SOAP-ENV:Body></SOAP-ENV:Envelope>`)
	return b.Bytes()
}

// ParseResponse reads an answer: its StatusCode and fields, or a fault as
// an error.
func ParseResponse(body []byte) (uint32, *wsman.Node, error) {
	root, err := wsman.Parse(body)
	if err != nil {
		return 0, nil, err
	}
	b := root.ChildNS(NSSoap11, "Body")
	if b == nil || len(b.Children) == 0 {
		return 0, nil, fmt.Errorf("%w: answer without a body", ErrMalformed)
	}
	r := b.Children[0]
	if r.Name.Local == "Fault" {
		return 0, nil, fmt.Errorf("eoi: fault %s: %s", r.Value("faultcode"), r.Value("faultstring"))
	}
	var st uint32
	if _, err := fmt.Sscan(r.Value("StatusCode"), &st); err != nil {
		return 0, nil, fmt.Errorf("%w: StatusCode %q", ErrMalformed, clip(r.Value("StatusCode")))
	}
	return st, r, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
