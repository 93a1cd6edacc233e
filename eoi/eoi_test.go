package eoi

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A call as amttool writes it (SOAP 1.1, the service namespace on the
// method) parses, and an answer round-trips through ParseResponse.
func TestRequestAndResponse(t *testing.T) {
	body := `<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
<SOAP-ENV:Body><RemoteControl xmlns="http://schemas.intel.com/platform/client/RemoteControl/2004/01"><Command>19</Command><IanaOemNumber>343</IanaOemNumber></RemoteControl></SOAP-ENV:Body></SOAP-ENV:Envelope>`
	r, err := ParseRequest("/RemoteControlService", []byte(body))
	require.NoError(t, err)
	assert.Equal(t, RemoteControl, r.Service)
	assert.Equal(t, "RemoteControl", r.Method)
	assert.Equal(t, "19", r.Param("Command"))
	assert.Equal(t, "343", r.Param("IanaOemNumber"))

	resp := &Response{Service: NetworkAdministration, Method: "GetHostName", Status: 0, Fields: []Field{F("HostName", "a<b")}}
	st, n, err := ParseResponse(resp.Marshal())
	require.NoError(t, err)
	assert.Equal(t, uint32(0), st)
	assert.Equal(t, "GetHostNameResponse", n.Name.Local)
	assert.Equal(t, Namespace(NetworkAdministration), n.Name.Space)
	assert.Equal(t, "a<b", n.Value("HostName"))

	_, _, err = ParseResponse(Fault("Client", "no such method"))
	assert.ErrorContains(t, err, "no such method")

	c, err := ParseRequest(Path(SecurityAdministration), Call(SecurityAdministration, "SetTLSPSK", []Field{F("PID", "x"), {Name: "Nested", Children: []Field{F("A", "1")}}}))
	require.NoError(t, err)
	assert.Equal(t, "SetTLSPSK", c.Method)
	assert.Equal(t, "1", c.Params.Child("Nested").Value("A"))
}

func TestMalformedRequests(t *testing.T) {
	for name, c := range map[string][2]string{
		"unknown path":  {"/NoService", string(Call(GeneralInfo, "GetCoreVersion", nil))},
		"wrong service": {Path(RemoteControl), string(Call(GeneralInfo, "GetCoreVersion", nil))},
		"soap 1.2":      {Path(GeneralInfo), `<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body/></Envelope>`},
		"two calls":     {Path(GeneralInfo), strings.Replace(string(Call(GeneralInfo, "A", nil)), "</SOAP-ENV:Body>", "<m:B/></SOAP-ENV:Body>", 1)},
		"empty body":    {Path(GeneralInfo), `<e:Envelope xmlns:e="` + NSSoap11 + `"><e:Body/></e:Envelope>`},
		"not xml":       {Path(GeneralInfo), "hello"},
		"entity":        {Path(GeneralInfo), `<!DOCTYPE x [<!ENTITY a "b">]><e:Envelope xmlns:e="` + NSSoap11 + `"/>`},
	} {
		_, err := ParseRequest(c[0], []byte(c[1]))
		assert.ErrorIs(t, err, ErrMalformed, name)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(Path(GeneralInfo), string(Call(GeneralInfo, "GetCoreVersion", nil)))
	f.Add(Path(SecurityAdministration), string(Call(SecurityAdministration, "SetTLSPSK", []Field{F("PID", "0000-037M"), F("PPS", "x")})))
	f.Add(Path(RemoteControl), `<e:Envelope xmlns:e="`+NSSoap11+`"><e:Body><RemoteControl xmlns="`+Namespace(RemoteControl)+`"><Command>16</Command></RemoteControl></e:Body></e:Envelope>`)
	f.Fuzz(func(t *testing.T, path, body string) {
		r, err := ParseRequest(path, []byte(body))
		if err != nil {
			return
		}
		if r.Service == "" || r.Method == "" || r.Params == nil || Path(r.Service) != path {
			t.Fatalf("accepted a request without a service or method: %+v", r)
		}
	})
}
