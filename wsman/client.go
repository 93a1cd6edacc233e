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

	// parsing lends parser to one call at a time (see lendParser).
	parsing sync.Mutex
	parser  Parser
}

// lendParser lends the client's Parser to a call that reads what it
// needs out of the answer before it returns (the methods here: instances
// and references of their own, never nodes), so that a session's calls,
// one after another, reuse one set of node arrays. A call that finds it
// lent parses into a fresh one. release ends the loan. Do, whose caller
// keeps the envelope, parses into a fresh one always.
func (c *Client) lendParser() (ps *Parser, release func()) {
	if c.parsing.TryLock() {
		return &c.parser, c.parsing.Unlock
	}
	return new(Parser), func() {}
}

// Do sends one request and returns the answer's envelope. A SOAP fault is
// returned as *Fault.
func (c *Client) Do(ctx context.Context, action, uri string, sel map[string]string, body string) (*Envelope, error) {
	return c.do(ctx, new(Parser), action, uri, sel, body)
}

// do is Do parsing the answer with ps.
func (c *Client) do(ctx context.Context, ps *Parser, action, uri string, sel map[string]string, body string) (*Envelope, error) {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	id := c.ids.Add(1)
	msg := Marshal(Header{To: c.URL, ResourceURI: uri, Action: action, ReplyTo: Anonymous,
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
		b = make([]byte, n)
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(resp.Body, MaxEnvelopeSize+1))
	}
	if err != nil {
		return nil, fmt.Errorf("wsman: %s %s: reading the answer: %w", ClassName(action), ClassName(uri), err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("wsman: %s %s: HTTP 401 Unauthorized", ClassName(action), ClassName(uri))
	}
	env, err := ps.ParseEnvelope(b)
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
	ps, release := c.lendParser()
	defer release()
	env, err := c.do(ctx, ps, ActionGet, uri, sel, "")
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
	ps, release := c.lendParser()
	defer release()
	env, err := c.do(ctx, ps, ActionPut, in.NS, sel, in.XML())
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
	ps, release := c.lendParser()
	defer release()
	env, err := c.do(ctx, ps, ActionCreate, in.NS, nil, in.XML())
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
	ps, release := c.lendParser()
	defer release()
	_, err := c.do(ctx, ps, ActionDelete, uri, sel, "")
	return err
}

// Enumerate returns every instance of a class (Enumerate, then Pull until
// EndOfSequence).
func (c *Client) Enumerate(ctx context.Context, uri string) ([]*Instance, error) {
	ps, release := c.lendParser()
	defer release()
	env, err := c.do(ctx, ps, ActionEnumerate, uri, nil, `<g:Enumerate xmlns:g="`+NSEnumeration+`"></g:Enumerate>`)
	if err != nil {
		return nil, err
	}
	ectx := env.Body.Value("EnumerationContext")
	var out []*Instance
	for range 1000 {
		env, err = c.do(ctx, ps, ActionPull, uri, nil, `<g:Pull xmlns:g="`+NSEnumeration+`"><g:EnumerationContext>`+escapeString(ectx)+
			`</g:EnumerationContext><g:MaxElements>32</g:MaxElements></g:Pull>`)
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
	ps, release := c.lendParser()
	defer release()
	env, err := c.do(ctx, ps, uri+"/"+method, uri, sel, in.XML())
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
