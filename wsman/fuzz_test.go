package wsman

import (
	"testing"
)

// FuzzServe feeds request bodies to a server: every answer is a well-formed
// envelope, whatever came in.
func FuzzServe(f *testing.F) {
	f.Add(string(Marshal(Header{Action: ActionGet, MessageID: "1", ResourceURI: generalSettings}, "")))
	f.Add(string(Marshal(Header{Action: ActionPut, MessageID: "2", ResourceURI: generalSettings}, NewInstance(generalSettings).Set("HostName", "x").XML())))
	f.Add(string(Marshal(Header{Action: CIMSchema + "CIM_Thing/Add", MessageID: "3", ResourceURI: CIMSchema + "CIM_Thing"},
		`<h:Add_INPUT xmlns:h="`+CIMSchema+`CIM_Thing"><h:A>1</h:A><h:B>2</h:B></h:Add_INPUT>`)))
	f.Add(string(Marshal(Header{Action: ActionPull, MessageID: "4"}, `<g:Pull xmlns:g="`+NSEnumeration+`"><g:EnumerationContext>x</g:EnumerationContext></g:Pull>`)))
	f.Add(`<Envelope xmlns="` + NSSoap + `"><Header/><Body/></Envelope>`)
	f.Fuzz(func(t *testing.T, body string) {
		s := &Server{Handler: newMem()}
		out, _ := s.Serve([]byte(body))
		env, err := ParseEnvelope(out)
		if err != nil {
			t.Fatalf("answer is not an envelope: %v\n%s", err, out)
		}
		if env.Header.Action == "" {
			t.Fatalf("answer without an action:\n%s", out)
		}
	})
}
