package wsman

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ContentType is what AMT's /wsman takes and answers with.
const ContentType = "application/soap+xml;charset=UTF-8"

// Client calls one device's /wsman. HTTP carries the transport and the
// authentication (digest.Transport, TLS); the client builds envelopes and
// reads answers, turning faults into *Fault errors.
type Client struct {
	HTTP *http.Client
	URL  string // e.g. https://10.0.0.5:16993/wsman
	// Timeout bounds each call, the answer read whole (0: none). It is
	// the call's context deadline rather than http.Client.Timeout, which
	// over a RoundTripper net/http does not know (digest.Transport) costs
	// a goroutine, a timer and two channels per call on top of a context.
	Timeout time.Duration

	ids atomic.Uint64

	// lending lends scratch to one call at a time (see lend).
	lending sync.Mutex
	scratch answerScratch
}

// answerScratch is what a call reads its answer with: the Parser and the
// array the answer's bytes go into before it parses them.
type answerScratch struct {
	ps   Parser
	body []byte
}

// keptAnswer is the largest answer array a client keeps for its next call;
// the few larger answers (an enumeration of many certificates) allocate.
const keptAnswer = 32 << 10

// lend lends the client's scratch to a call that reads what it needs out
// of the answer before it returns (the methods here: instances and
// references of their own, never nodes; the parser copies every string it
// makes, so nothing refers to the answer's bytes), so that a session's
// calls, one after another, reuse one set of node arrays and one answer
// array. A call that finds it lent uses a fresh one. release ends the
// loan. Do, whose caller keeps the envelope, uses a fresh one always.
func (c *Client) lend() (sc *answerScratch, release func()) {
	if c.lending.TryLock() {
		return &c.scratch, c.lending.Unlock
	}
	return new(answerScratch), func() {}
}

// Do sends one request and returns the answer's envelope. A SOAP fault is
// returned as *Fault.
func (c *Client) Do(ctx context.Context, action, uri string, sel map[string]string, body string) (*Envelope, error) {
	return c.do(ctx, new(answerScratch), action, uri, sel, textBody(body))
}

// requestBody writes a request's body into its envelope; size is about how
// long it is, so that the envelope's buffer is sized once.
type requestBody struct {
	size  int
	write func(*bytes.Buffer)
}

// textBody is a body written as given.
func textBody(s string) requestBody {
	return requestBody{len(s), func(b *bytes.Buffer) { b.WriteString(s) }}
}

// instanceBody is in rendered as XML renders it, straight into the
// envelope rather than into a string of its own first.
func instanceBody(in *Instance) requestBody {
	return requestBody{in.xmlSize(), in.xmlTo}
}

// do is Do reading and parsing the answer with sc.
func (c *Client) do(ctx context.Context, sc *answerScratch, action, uri string, sel map[string]string, body requestBody) (*Envelope, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	id := c.ids.Add(1)
	msg := marshalRequest(Header{To: c.URL, ResourceURI: uri, Action: action, ReplyTo: Anonymous,
		MessageID: fmt.Sprintf("uuid:%08x-0000-4000-8000-%012x", id, id), Selectors: sel}, body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(msg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ContentType)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("wsman: %s %s: %w", ClassName(action), ClassName(uri), err)
	}
	defer resp.Body.Close()
	var b []byte
	if n := resp.ContentLength; n >= 0 && n <= MaxEnvelopeSize {
		if int64(cap(sc.body)) >= n {
			b = sc.body[:n]
		} else {
			b = make([]byte, n)
		}
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = readAll(sc.body[:0], io.LimitReader(resp.Body, MaxEnvelopeSize+1))
	}
	if cap(b) > cap(sc.body) && cap(b) <= keptAnswer {
		sc.body = b[:0]
	}
	if err != nil {
		return nil, fmt.Errorf("wsman: %s %s: reading the answer: %w", ClassName(action), ClassName(uri), err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("wsman: %s %s: HTTP 401 Unauthorized", ClassName(action), ClassName(uri))
	}
	env, err := sc.ps.ParseEnvelope(b)
	if err != nil {
		return nil, fmt.Errorf("wsman: %s %s: HTTP %d: %w", ClassName(action), ClassName(uri), resp.StatusCode, err)
	}
	if env.Body != nil && env.Body.Name.Local == "Fault" {
		return nil, faultFromNode(env.Body)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("wsman: %s %s: HTTP %d", ClassName(action), ClassName(uri), resp.StatusCode)
	}
	return env, nil
}

// Get reads an instance.
func (c *Client) Get(ctx context.Context, uri string, sel map[string]string) (*Instance, error) {
	sc, release := c.lend()
	defer release()
	env, err := c.do(ctx, sc, ActionGet, uri, sel, requestBody{})
	if err != nil {
		return nil, err
	}
	if env.Body == nil {
		return nil, fmt.Errorf("wsman: Get %s: empty body", ClassName(uri))
	}
	return InstanceFromNode(env.Body), nil
}

// Put writes an instance and returns it as the device now has it.
func (c *Client) Put(ctx context.Context, in *Instance, sel map[string]string) (*Instance, error) {
	sc, release := c.lend()
	defer release()
	env, err := c.do(ctx, sc, ActionPut, in.NS, sel, instanceBody(in))
	if err != nil {
		return nil, err
	}
	if env.Body == nil {
		return nil, fmt.Errorf("wsman: Put %s: empty body", in.Element)
	}
	return InstanceFromNode(env.Body), nil
}

// Create makes an instance and returns the reference to it.
func (c *Client) Create(ctx context.Context, in *Instance) (*EPR, error) {
	sc, release := c.lend()
	defer release()
	env, err := c.do(ctx, sc, ActionCreate, in.NS, nil, instanceBody(in))
	if err != nil {
		return nil, err
	}
	if env.Body == nil || env.Body.Name.Local != "ResourceCreated" {
		return nil, fmt.Errorf("wsman: Create %s: no ResourceCreated", in.Element)
	}
	return eprFromNode(env.Body), nil
}

// Delete removes an instance.
func (c *Client) Delete(ctx context.Context, uri string, sel map[string]string) error {
	sc, release := c.lend()
	defer release()
	_, err := c.do(ctx, sc, ActionDelete, uri, sel, requestBody{})
	return err
}

// Enumerate returns every instance of a class (Enumerate, then Pull until
// EndOfSequence).
func (c *Client) Enumerate(ctx context.Context, uri string) ([]*Instance, error) {
	sc, release := c.lend()
	defer release()
	env, err := c.do(ctx, sc, ActionEnumerate, uri, nil, textBody(`<g:Enumerate xmlns:g="`+NSEnumeration+`"></g:Enumerate>`))
	if err != nil {
		return nil, err
	}
	ectx := env.Body.Value("EnumerationContext")
	var out []*Instance
	for range 1000 {
		env, err = c.do(ctx, sc, ActionPull, uri, nil, textBody(`<g:Pull xmlns:g="`+NSEnumeration+`"><g:EnumerationContext>`+escapeString(ectx)+
			`</g:EnumerationContext><g:MaxElements>32</g:MaxElements></g:Pull>`))
		if err != nil {
			return nil, err
		}
		for _, n := range env.Body.Child("Items").Children {
			out = append(out, InstanceFromNode(n))
		}
		if env.Body.Child("EndOfSequence") != nil {
			return out, nil
		}
		if next := env.Body.Value("EnumerationContext"); next != "" {
			ectx = next
		}
	}
	return nil, fmt.Errorf("wsman: Enumerate %s: no end of sequence", ClassName(uri))
}

// Invoke calls a method. in holds the input properties (nil for none). The
// answer's ReturnValue is checked by the caller: AMT reports failures there
// with PT_STATUS codes, not as faults.
func (c *Client) Invoke(ctx context.Context, uri, method string, sel map[string]string, in *Instance) (*Instance, error) {
	if in == nil {
		in = &Instance{}
	}
	in.Element, in.NS = method+"_INPUT", uri
	sc, release := c.lend()
	defer release()
	env, err := c.do(ctx, sc, uri+"/"+method, uri, sel, instanceBody(in))
	if err != nil {
		return nil, err
	}
	if env.Body == nil {
		return nil, fmt.Errorf("wsman: %s: empty body", method)
	}
	return InstanceFromNode(env.Body), nil
}

func escapeString(s string) string {
	var b bytes.Buffer
	escape(&b, s)
	return b.String()
}

// readAll is io.ReadAll appending to b.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	if cap(b) == 0 {
		b = make([]byte, 0, 512) // as io.ReadAll starts
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}
