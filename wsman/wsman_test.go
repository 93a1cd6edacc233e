package wsman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const generalSettings = AMTSchema + "AMT_GeneralSettings"

// memHandler is a small in-memory Handler: one settings instance, a list of
// credentials contexts, and an Add method.
type memHandler struct {
	settings *Instance
	items    map[string]*Instance
	next     int
}

func newMem() *memHandler {
	return &memHandler{
		settings: NewInstance(generalSettings).Set("HostName", "optiplex").Set("DomainName", "").Set("DigestRealm", "Digest:AF541D9BC94CFF7ADFA073F492F355E6"),
		items:    map[string]*Instance{},
	}
}

var errNoSuch = FaultDestinationUnreachable("no such resource")

func (m *memHandler) Get(uri string, sel map[string]string) (*Instance, error) {
	if uri == generalSettings {
		return m.settings, nil
	}
	if in, ok := m.items[sel["InstanceID"]]; ok && uri == CIMSchema+"CIM_Thing" {
		return in, nil
	}
	return nil, errNoSuch
}

func (m *memHandler) Put(uri string, sel map[string]string, in *Instance) (*Instance, error) {
	if uri != generalSettings {
		return nil, errNoSuch
	}
	for _, p := range in.Props {
		m.settings.Set(p.Name, p.Values...)
	}
	return m.settings, nil
}

func (m *memHandler) Create(uri string, in *Instance) (*EPR, error) {
	m.next++
	id := fmt.Sprint("Thing ", m.next)
	in.Set("InstanceID", id)
	m.items[id] = in
	return &EPR{Address: Anonymous, ResourceURI: uri, Selectors: map[string]string{"InstanceID": id}}, nil
}

func (m *memHandler) Delete(uri string, sel map[string]string) error {
	if _, ok := m.items[sel["InstanceID"]]; !ok {
		return FaultInvalidSelectors("no such InstanceID")
	}
	delete(m.items, sel["InstanceID"])
	return nil
}

func (m *memHandler) Enumerate(uri string) ([]*Instance, error) {
	var out []*Instance
	for i := 1; i <= m.next; i++ {
		if in, ok := m.items[fmt.Sprint("Thing ", i)]; ok {
			out = append(out, in)
		}
	}
	return out, nil
}

func (m *memHandler) Invoke(uri, method string, sel map[string]string, in *Instance) (*Instance, error) {
	if method != "Add" {
		return nil, FaultActionNotSupported(uri + "/" + method)
	}
	a, err1 := in.Uint("A")
	b, err2 := in.Uint("B")
	if err := errors.Join(err1, err2); err != nil {
		return nil, FaultSchemaValidation(err.Error())
	}
	return (&Instance{}).Set("ReturnValue", "0").Set("Sum", fmt.Sprint(a+b)), nil
}

func serve(t *testing.T, h Handler) *Client {
	t.Helper()
	s := &Server{Handler: h}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		out, fault := s.Serve(b)
		w.Header().Set("Content-Type", ContentType)
		if fault {
			w.WriteHeader(http.StatusBadRequest)
		}
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return &Client{HTTP: srv.Client(), URL: srv.URL + "/wsman"}
}

func TestTransferEnumerateInvoke(t *testing.T) {
	ctx := context.Background()
	c := serve(t, newMem())

	gs, err := c.Get(ctx, generalSettings, nil)
	require.NoError(t, err)
	assert.Equal(t, "AMT_GeneralSettings", gs.Element)
	assert.Equal(t, generalSettings, gs.NS)
	realm, _ := gs.Get("DigestRealm")
	assert.Equal(t, "Digest:AF541D9BC94CFF7ADFA073F492F355E6", realm)

	gs.Set("HostName", "host<&>1").Set("DomainName", "amtsim.example")
	got, err := c.Put(ctx, gs, nil)
	require.NoError(t, err)
	v, _ := got.Get("HostName")
	assert.Equal(t, "host<&>1", v, "escaped and back")

	thing := CIMSchema + "CIM_Thing"
	for i := range 5 {
		epr, err := c.Create(ctx, NewInstance(thing).Set("Value", fmt.Sprint(i)).Set("List", "a", "b"))
		require.NoError(t, err)
		assert.Equal(t, thing, epr.ResourceURI)
		assert.Equal(t, fmt.Sprint("Thing ", i+1), epr.Selectors["InstanceID"])
	}
	one, err := c.Get(ctx, thing, map[string]string{"InstanceID": "Thing 3"})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, one.All("List"))
	require.NoError(t, c.Delete(ctx, thing, map[string]string{"InstanceID": "Thing 2"}))
	var f *Fault
	require.ErrorAs(t, c.Delete(ctx, thing, map[string]string{"InstanceID": "Thing 2"}), &f)
	assert.Equal(t, "c:InvalidSelectors", f.Subcode)

	// 4 items pulled 32 at a time; then 40 items over two pulls.
	all, err := c.Enumerate(ctx, thing)
	require.NoError(t, err)
	require.Len(t, all, 4)
	assert.Equal(t, "3", all[2].All("Value")[0])
	for i := range 36 {
		_, err := c.Create(ctx, NewInstance(thing).Set("Value", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	all, err = c.Enumerate(ctx, thing)
	require.NoError(t, err)
	assert.Len(t, all, 40)

	out, err := c.Invoke(ctx, thing, "Add", nil, (&Instance{}).Set("A", "2").Set("B", "40"))
	require.NoError(t, err)
	assert.Equal(t, "Add_OUTPUT", out.Element)
	sum, _ := out.Get("Sum")
	assert.Equal(t, "42", sum)

	_, err = c.Invoke(ctx, thing, "Add", nil, (&Instance{}).Set("A", "x"))
	require.ErrorAs(t, err, &f)
	assert.Equal(t, "c:SchemaValidationError", f.Subcode)
	_, err = c.Get(ctx, AMTSchema+"AMT_Nothing", nil)
	require.ErrorAs(t, err, &f)
	assert.Equal(t, "b:DestinationUnreachable", f.Subcode)
	_, err = c.Do(ctx, "http://example.com/Frobnicate", thing, nil, "")
	require.ErrorAs(t, err, &f)
	assert.Equal(t, "b:ActionNotSupported", f.Subcode)
}

// A request in the form MeshCommander-era tools send (default namespace,
// empty body, OperationTimeout) is read.
func TestParseToolRequest(t *testing.T) {
	req := `<?xml version="1.0" encoding="utf-8"?><Envelope xmlns="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><Header><a:Action>http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action><a:To>/wsman</a:To><w:ResourceURI>http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings</w:ResourceURI><a:MessageID>1</a:MessageID><a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout></Header><Body /></Envelope>`
	env, err := ParseEnvelope([]byte(req))
	require.NoError(t, err)
	assert.Equal(t, Header{To: "/wsman", ResourceURI: generalSettings, Action: ActionGet, MessageID: "1", ReplyTo: Anonymous}, env.Header)
	assert.Nil(t, env.Body)

	s := &Server{Handler: newMem()}
	out, fault := s.Serve([]byte(req))
	require.False(t, fault, "%s", out)
	resp, err := ParseEnvelope(out)
	require.NoError(t, err)
	assert.Equal(t, "1", resp.Header.RelatesTo)
	assert.Equal(t, ActionGet+"Response", resp.Header.Action)
	assert.Equal(t, "optiplex", resp.Body.Value("HostName"))
}

// What is not a good envelope gets a fault, never a panic.
func TestMalformedRequestsGetFaults(t *testing.T) {
	s := &Server{Handler: newMem()}
	bomb := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><Envelope xmlns="` + NSSoap + `"><Body>&lol2;</Body></Envelope>`
	deep := strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100)
	for name, body := range map[string]string{
		"empty":        "",
		"not xml":      "GET / HTTP/1.1",
		"unclosed":     `<Envelope xmlns="` + NSSoap + `"><Body>`,
		"soap 1.1":     `<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Body/></Envelope>`,
		"no body":      `<Envelope xmlns="` + NSSoap + `"><Header/></Envelope>`,
		"no action":    `<Envelope xmlns="` + NSSoap + `"><Header/><Body/></Envelope>`,
		"entity bomb":  bomb,
		"deep":         deep,
		"huge":         `<Envelope xmlns="` + NSSoap + `"><Body>` + strings.Repeat("x", MaxEnvelopeSize) + `</Body></Envelope>`,
		"wrong method": string(Marshal(Header{Action: generalSettings + "/Add", MessageID: "7", ResourceURI: generalSettings}, `<h:Sub_INPUT xmlns:h="x"/>`)),
	} {
		out, fault := s.Serve([]byte(body))
		assert.True(t, fault, name)
		env, err := ParseEnvelope(out)
		require.NoError(t, err, name)
		require.NotNil(t, env.Body, name)
		assert.Equal(t, "Fault", env.Body.Name.Local, name)
		assert.Equal(t, ActionFault, env.Header.Action, name)
	}
}

// BenchmarkParse reads a typical request envelope (a Put of
// AMT_GeneralSettings): the hand-written parser and encoding/xml.
func BenchmarkParse(b *testing.B) {
	in := NewInstance(generalSettings)
	for _, p := range newMem().settings.Props {
		in.Set(p.Name, p.Values...)
	}
	msg := Marshal(Header{To: "http://10.0.0.5:16992/wsman", ResourceURI: generalSettings, Action: ActionPut, ReplyTo: Anonymous,
		MessageID: "uuid:00000001-0000-4000-8000-000000000001", Selectors: map[string]string{"InstanceID": "Intel(r) AMT: General Settings"}}, in.XML())
	for _, c := range []struct {
		name  string
		parse func([]byte) (*Node, error)
	}{{"amtsim", Parse}, {"encoding-xml", parseReference}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for range b.N {
				if _, err := c.parse(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestCallName(t *testing.T) {
	for _, c := range []struct {
		h    Header
		want string
	}{
		{Header{Action: ActionGet, ResourceURI: AMTSchema + "AMT_GeneralSettings"}, "Get:AMT_GeneralSettings"},
		{Header{Action: ActionPut, ResourceURI: AMTSchema + "AMT_TLSSettingData"}, "Put:AMT_TLSSettingData"},
		{Header{Action: ActionEnumerate, ResourceURI: AMTSchema + "AMT_PublicKeyCertificate"}, "Enumerate:AMT_PublicKeyCertificate"},
		{Header{Action: AMTSchema + "AMT_SetupAndConfigurationService/CommitChanges", ResourceURI: AMTSchema + "AMT_SetupAndConfigurationService"}, "CommitChanges"},
		{Header{Action: "Setup"}, "Setup"},
	} {
		assert.Equal(t, c.want, c.h.CallName())
	}
}

// Text split into 16,000 pieces by comments costs work linear in the
// message: a handful of allocations, not one per piece (which, with each
// piece's string concatenated onto all before it, made 153 ms of one
// request).
func TestParseTextSplitByComments(t *testing.T) {
	var b strings.Builder
	b.WriteString("<a>")
	for range 16000 {
		b.WriteString("x<!---->")
	}
	b.WriteString("</a>")
	doc := []byte(b.String())
	require.Less(t, len(doc), MaxEnvelopeSize)
	n, err := Parse(doc)
	require.NoError(t, err)
	assert.Len(t, n.Text, 16000)
	allocs := testing.AllocsPerRun(5, func() { _, _ = Parse(doc) })
	assert.Less(t, allocs, 40.0, "allocations per parse")
}

// Timeout bounds the whole call: a device that sends its headers and then
// holds the rest of its answer (busy writing its flash) fails the call with
// a deadline error once Timeout passes, and the next call on the same
// client, answered at once, goes through.
func TestClientTimeoutCoversTheAnswer(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Bool
	s := &Server{Handler: newMem()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		out, _ := s.Serve(b)
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Content-Length", fmt.Sprint(len(out)))
		if held.CompareAndSwap(false, true) {
			_, _ = w.Write(out[:10])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	defer close(release)
	c := &Client{HTTP: srv.Client(), URL: srv.URL + "/wsman", Timeout: 200 * time.Millisecond}
	_, err := c.Get(context.Background(), generalSettings, nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the held answer ends the call by its deadline")
	gs, err := c.Get(context.Background(), generalSettings, nil)
	require.NoError(t, err)
	assert.Equal(t, "AMT_GeneralSettings", gs.Element)
}

// An envelope is written into a buffer sized once from its header: it is
// never grown (a copy of all written so far), and has not much to spare.
func TestMarshalSizesItsBuffer(t *testing.T) {
	for _, h := range []Header{
		{},
		{To: Anonymous, Action: "http://schemas.dmtf.org/wbem/wsman/1/wsman/FaultX", MessageID: "uuid:00000000-8086-8086-8086-000000000001"},
		{To: "http://192.168.0.10:16992/wsman", ReplyTo: Anonymous, Action: "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
			MessageID: "uuid:" + strings.Repeat("f", 36), RelatesTo: "uuid:1", ResourceURI: "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings",
			Selectors: map[string]string{"Name": "Intel(r) AMT Ethernet Port Settings 0", "InstanceID": "Intel(r) AMT & <something>"}},
	} {
		const body = `<h:X xmlns:h="urn:x">y</h:X>`
		out := Marshal(h, body)
		assert.LessOrEqual(t, len(out), h.size("")+len(body), "%+v", h)
		assert.Less(t, h.size("")+len(body)-len(out), 400, "%+v", h)
		var b bytes.Buffer
		b.Grow(h.size("urn:x") + len(body))
		c0 := cap(b.Bytes())
		marshalTo(&b, h, "urn:x", func(b *bytes.Buffer) { b.WriteString(body) })
		assert.Equal(t, c0, cap(b.Bytes()), "grown: %+v", h)
	}
}

// An instance in a request's body is written into the envelope's buffer,
// sized once for it too: xmlSize covers what XML writes, with little to
// spare.
func TestInstanceXMLSizesItsBuffer(t *testing.T) {
	for _, in := range []*Instance{
		{Element: "GetLowAccuracyTimeSynch_INPUT", NS: "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_TimeSynchronizationService"},
		NewInstance("http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings").Set("HostName", "host<&>1").Set("DomainName", "amtsim.example").
			Set("List", "a", "b", "c"),
		(&Instance{Element: "AddCertificate_INPUT", NS: "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_PublicKeyManagementService"}).
			Set("CertificateBlob", strings.Repeat("QUJD", 300)).
			SetEPR("Key", EPR{Address: Anonymous, ResourceURI: "http://intel.com/wbem/wscim/1/amt-schema/1/AMT_PublicPrivateKeyPair",
				Selectors: map[string]string{"InstanceID": "Intel(r) AMT Key: Handle: 0"}}),
	} {
		out := in.XML()
		assert.LessOrEqual(t, len(out), in.xmlSize(), in.Element)
		assert.Less(t, in.xmlSize()-len(out), 200, in.Element)
		h := Header{To: "http://192.168.0.10:16992/wsman", ReplyTo: Anonymous, Action: in.NS + "/X", MessageID: "uuid:1", ResourceURI: in.NS}
		var b bytes.Buffer
		b.Grow(h.size("") + in.xmlSize())
		c0 := cap(b.Bytes())
		marshalTo(&b, h, "", in.xmlTo)
		assert.Equal(t, c0, cap(b.Bytes()), "grown: %s", in.Element)
		assert.Contains(t, b.String(), "<a:Body>"+out+"</a:Body>")
	}
}

// A repeated element is one property of many values, and the values of
// the properties after it are their own.
func TestInstanceFromNodeKeepsRepeatedValues(t *testing.T) {
	n, err := Parse([]byte(`<h:X xmlns:h="urn:x"><h:A>1</h:A><h:A>2</h:A><h:B> 3 </h:B><h:A>4</h:A><h:C>5</h:C></h:X>`))
	require.NoError(t, err)
	in := InstanceFromNode(n)
	assert.Equal(t, []Prop{
		{Name: "A", Values: []string{"1", "2"}},
		{Name: "B", Values: []string{"3"}},
		{Name: "A", Values: []string{"4"}},
		{Name: "C", Values: []string{"5"}},
	}, in.Props)
}

// A call's answer is read into an array the client keeps for its next
// call: what a call returned must not change when the next answer, framed
// by Content-Length or chunked, longer or shorter, is read over it.
func TestClientAnswersOutliveTheNextCall(t *testing.T) {
	s := &Server{Handler: newMem()}
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		out, _ := s.Serve(b)
		w.Header().Set("Content-Type", ContentType)
		if calls.Add(1)%2 == 0 {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	c := &Client{HTTP: srv.Client(), URL: srv.URL + "/wsman"}
	ctx := context.Background()

	var kept []*Instance
	var want [][]string
	for i := range 6 {
		gs, err := c.Get(ctx, generalSettings, nil)
		require.NoError(t, err)
		sum, err := c.Invoke(ctx, generalSettings, "Add", nil, (&Instance{}).Set("A", fmt.Sprint(i)).Set("B", "1000"))
		require.NoError(t, err)
		kept = append(kept, gs, sum)
		realm, _ := gs.Get("DigestRealm")
		total, _ := sum.Get("Sum")
		// Copies, so that an answer's strings that shared the answer's
		// bytes would show the next answer's here and not there.
		want = append(want, []string{strings.Clone(gs.Element), strings.Clone(realm)}, []string{strings.Clone(sum.Element), strings.Clone(total)})
	}
	for i, in := range kept {
		v := in.Props[len(in.Props)-1].Values[0]
		if i%2 == 0 {
			v, _ = in.Get("DigestRealm")
		}
		assert.Equal(t, want[i], []string{in.Element, v}, "answer %d, after %d more calls", i, len(kept)-1-i)
	}
	assert.Equal(t, []string{"Add_OUTPUT", "1005"}, want[len(want)-1])
}
