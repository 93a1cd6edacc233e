package wsman

import (
	"bytes"
	"fmt"
)

// Fault is a SOAP 1.2 fault as WS-Management defines them. It is an error
// on the client side and a body on the server side.
type Fault struct {
	Code    string // "Sender" or "Receiver"
	Subcode string // a qualified name, e.g. "b:DestinationUnreachable"
	Reason  string
	Detail  string // optional, plain text
	// Action is the fault's WS-Addressing action (ActionFault unless the
	// subcode names its own).
	Action string
}

func (f *Fault) Error() string {
	return fmt.Sprintf("wsman: fault %s/%s: %s", f.Code, f.Subcode, f.Reason)
}

// The faults the device sends. Prefixes are those Marshal declares:
// b = addressing, c = wsman.
func FaultDestinationUnreachable(reason string) *Fault {
	return &Fault{Code: "Sender", Subcode: "b:DestinationUnreachable", Reason: reason}
}

func FaultActionNotSupported(action string) *Fault {
	return &Fault{Code: "Sender", Subcode: "b:ActionNotSupported", Reason: "The action is not supported by the service.", Detail: action}
}

func FaultInvalidSelectors(reason string) *Fault {
	return &Fault{Code: "Sender", Subcode: "c:InvalidSelectors", Reason: reason}
}

func FaultSchemaValidation(reason string) *Fault {
	return &Fault{Code: "Sender", Subcode: "c:SchemaValidationError", Reason: reason}
}

func FaultInvalidHeader(reason string) *Fault {
	return &Fault{Code: "Sender", Subcode: "b:InvalidMessageInformationHeader", Reason: reason}
}

func FaultAccessDenied(reason string) *Fault {
	return &Fault{Code: "Sender", Subcode: "c:AccessDenied", Reason: reason}
}

func FaultInvalidEnumerationContext() *Fault {
	return &Fault{Code: "Receiver", Subcode: "e:InvalidEnumerationContext", Reason: "The supplied enumeration context is invalid."}
}

func FaultInternal(reason string) *Fault {
	return &Fault{Code: "Receiver", Subcode: "c:InternalError", Reason: reason}
}

// XML renders the fault body.
func (f *Fault) XML() string {
	var b bytes.Buffer
	b.WriteString(`<a:Fault xmlns:e="` + NSEnumeration + `"><a:Code><a:Value>a:`)
	escape(&b, f.Code)
	b.WriteString(`</a:Value>`)
	if f.Subcode != "" {
		b.WriteString(`<a:Subcode><a:Value>`)
		escape(&b, f.Subcode)
		b.WriteString(`</a:Value></a:Subcode>`)
	}
	b.WriteString(`</a:Code><a:Reason><a:Text xml:lang="en-US">`)
	escape(&b, f.Reason)
	b.WriteString(`</a:Text></a:Reason>`)
	if f.Detail != "" {
		b.WriteString(`<a:Detail>`)
		escape(&b, f.Detail)
		b.WriteString(`</a:Detail>`)
	}
	b.WriteString(`</a:Fault>`)
	return b.String()
}

// faultFromNode reads a fault body.
func faultFromNode(n *Node) *Fault {
	code := n.Child("Code")
	f := &Fault{
		Code:    trimPrefix(code.Value("Value")),
		Subcode: code.Child("Subcode").Value("Value"),
		Reason:  n.Child("Reason").Value("Text"),
		Detail:  n.Value("Detail"),
	}
	return f
}

func trimPrefix(q string) string {
	for i := 0; i < len(q); i++ {
		if q[i] == ':' {
			return q[i+1:]
		}
	}
	return q
}
