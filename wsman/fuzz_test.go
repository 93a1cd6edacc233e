package wsman

import (
	"fmt"
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

// FuzzParseMatchesEncodingXML holds the hand-written parser to
// encoding/xml (strict): the same documents accepted, the same trees built.
// The one latitude: names with bytes beyond ASCII, where the two may judge
// differently and AMT never sends any.
func FuzzParseMatchesEncodingXML(f *testing.F) {
	for _, s := range []string{
		string(Marshal(Header{Action: ActionGet, MessageID: "1", ResourceURI: generalSettings, Selectors: map[string]string{"InstanceID": "a&b"}}, "")),
		string(Marshal(Header{Action: ActionPut, MessageID: "2", ResourceURI: generalSettings}, NewInstance(generalSettings).Set("HostName", "x<y").XML())),
		`<?xml version="1.0" encoding="utf-8"?><Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:a="urn:a"><Header><a:To>/wsman</a:To></Header><Body /></Envelope>`,
		`<a xmlns:p="u" p:x='1' y="&#65;&#x42;&amp;"><!-- c --><![CDATA[<raw>]]>t&lt;<p:b/>` + "\r\n" + `</a>`,
		`<a><b></a>`, `<a>]]></a>`, `<a x=1/>`, `<!DOCTYPE a><a/>`, `<?php ?><a/>`, `<a:b:c/>`, "<a>\x00</a>", `<a>&bogus;</a>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := Parse(b)
		want, werr := parseReference(b)
		if (gerr == nil) != (werr == nil) {
			if hasNonASCIIName(b) {
				return
			}
			t.Fatalf("Parse error %v, encoding/xml error %v, for %q", gerr, werr, b)
		}
		if gerr != nil {
			return
		}
		if d := diffNodes(got, want, "/"); d != "" {
			t.Fatalf("trees differ at %s for %q", d, b)
		}
	})
}

// FuzzParserReuse holds a Parser that parsed one message to what a fresh
// Parse makes of the next: nothing of the first (its nodes, attributes,
// namespaces, text, open elements, or a failure half-way) reaches the
// second tree.
func FuzzParserReuse(f *testing.F) {
	big := Marshal(Header{Action: ActionPut, MessageID: "2", ResourceURI: generalSettings, Selectors: map[string]string{"InstanceID": "a&b"}},
		NewInstance(generalSettings).Set("HostName", "x<y").Set("DomainName", "d").Set("DigestRealm", "r").XML())
	small := Marshal(Header{Action: ActionGet, MessageID: "1", ResourceURI: generalSettings}, "")
	for _, c := range [][2]string{
		{string(big), string(small)},
		{string(small), string(big)},
		{`<a xmlns:p="u" p:x='1'><p:b>t&lt;</p:b><p:b/><c y="2"/>`, string(small)}, // the first fails mid-way
		{`<a xmlns="u"><b/></a>`, `<a><b/></a>`},
		{`<a><![CDATA[x]]>y<!-- c -->z</a>`, `<a>q</a>`},
	} {
		f.Add([]byte(c[0]), []byte(c[1]))
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var ps Parser
		_, _ = ps.Parse(first)
		got, gerr := ps.Parse(second)
		want, werr := Parse(second)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("after %q: reused Parser error %v, fresh Parse error %v, for %q", first, gerr, werr, second)
		}
		if gerr != nil {
			if gerr.Error() != werr.Error() {
				t.Fatalf("after %q: reused Parser says %v, fresh Parse %v", first, gerr, werr)
			}
			return
		}
		if d := diffNodes(got, want, "/"); d != "" {
			t.Fatalf("after %q: trees differ at %s for %q", first, d, second)
		}
	})
}

func hasNonASCIIName(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// diffNodes names the first place two trees differ, or "".
func diffNodes(a, b *Node, at string) string {
	at += a.Name.Local
	if a.Name != b.Name {
		return fmt.Sprintf("%s name %v vs %v", at, a.Name, b.Name)
	}
	if a.Text != b.Text {
		return fmt.Sprintf("%s text %q vs %q", at, a.Text, b.Text)
	}
	if len(a.Attr) != len(b.Attr) {
		return fmt.Sprintf("%s %d attributes vs %d", at, len(a.Attr), len(b.Attr))
	}
	for i := range a.Attr {
		if a.Attr[i] != b.Attr[i] {
			return fmt.Sprintf("%s attribute %v vs %v", at, a.Attr[i], b.Attr[i])
		}
	}
	if len(a.Children) != len(b.Children) {
		return fmt.Sprintf("%s %d children vs %d", at, len(a.Children), len(b.Children))
	}
	for i := range a.Children {
		if d := diffNodes(a.Children[i], b.Children[i], at+"/"); d != "" {
			return d
		}
	}
	return ""
}
