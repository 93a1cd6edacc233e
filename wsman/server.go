package wsman

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// Handler is what a device offers through WS-Management. Each method gets
// the request's resource URI and selectors. An error that is a *Fault is
// sent as that fault; any other error as an InternalError fault.
type Handler interface {
	Get(uri string, sel map[string]string) (*Instance, error)
	Put(uri string, sel map[string]string, in *Instance) (*Instance, error)
	Create(uri string, in *Instance) (*EPR, error)
	Delete(uri string, sel map[string]string) error
	Enumerate(uri string) ([]*Instance, error)
	// Invoke runs a method; in is its _INPUT element (empty for none) and
	// the result its _OUTPUT properties (ReturnValue first).
	Invoke(uri, method string, sel map[string]string, in *Instance) (*Instance, error)
}

// Server turns request bodies into response bodies for one Handler. It
// holds the open enumerations (at most a few; the oldest is dropped).
type Server struct {
	Handler Handler
	// OnMalformed, if set, hears of each request that could not be read
	// (it is answered with a fault all the same), so the owner can count.
	OnMalformed func(error)

	mu    sync.Mutex
	ids   uint64
	enums map[string][]*Instance
	order []string

	// parsing is held while a request is read and answered from the
	// parser's tree: a connection's requests come one at a time and reuse
	// it; a request that finds it busy parses into memory of its own.
	parsing sync.Mutex
	parser  Parser
}

const maxEnumerations = 4

// Serve answers one request body. It never fails: what cannot be read is
// answered with a fault. The bool reports whether the answer is a fault
// (HTTP 400/500 on the wire, as AMT sends them).
func (s *Server) Serve(body []byte) ([]byte, bool) {
	var b bytes.Buffer
	fault := s.ServeTo(&b, body)
	return b.Bytes(), fault
}

// ServeTo is Serve writing the answer to w, so that a connection can use
// one buffer for all its answers.
func (s *Server) ServeTo(w *bytes.Buffer, body []byte) bool {
	ps := new(Parser)
	if s.parsing.TryLock() {
		defer s.parsing.Unlock()
		ps = &s.parser
	}
	// The handler gets values (strings, selector maps, instances) read
	// out of the tree, never its nodes, so the tree is done with when
	// ServeTo returns.
	env, err := ps.ParseEnvelope(body)
	if err != nil {
		if s.OnMalformed != nil {
			s.OnMalformed(err)
		}
		s.fault(w, Header{}, FaultSchemaValidation(err.Error()))
		return true
	}
	h := env.Header
	if h.Action == "" || h.MessageID == "" {
		s.fault(w, h, FaultInvalidHeader("The Action and MessageID headers are required."))
		return true
	}
	action, ns, out, err := s.dispatch(env)
	if err != nil {
		var f *Fault
		if !errors.As(err, &f) {
			f = FaultInternal(err.Error())
		}
		s.fault(w, h, f)
		return true
	}
	marshalTo(w, Header{To: Anonymous, RelatesTo: h.MessageID, Action: action, MessageID: s.id(), ResourceURI: h.ResourceURI}, ns, out)
	return false
}

// dispatch runs the request and returns the response's action, the
// namespace of the instances in its body (declared as h on the Envelope)
// and what writes its body (nil for an empty one).
func (s *Server) dispatch(env *Envelope) (string, string, func(*bytes.Buffer), error) {
	h := env.Header
	uri := h.ResourceURI
	if uri == "" && h.Action != ActionPull && h.Action != ActionRelease {
		return "", "", nil, FaultDestinationUnreachable("No ResourceURI in the header.")
	}
	switch h.Action {
	case ActionGet:
		in, err := s.Handler.Get(uri, h.Selectors)
		if err != nil {
			return "", "", nil, err
		}
		return ActionGet + "Response", in.NS, in.write, nil
	case ActionPut:
		if env.Body == nil {
			return "", "", nil, FaultSchemaValidation("Put without an instance in the body.")
		}
		if err := instanceOf(env.Body, uri); err != nil {
			return "", "", nil, err
		}
		in, err := s.Handler.Put(uri, h.Selectors, InstanceFromNode(env.Body))
		if err != nil {
			return "", "", nil, err
		}
		return ActionPut + "Response", in.NS, in.write, nil
	case ActionCreate:
		if env.Body == nil {
			return "", "", nil, FaultSchemaValidation("Create without an instance in the body.")
		}
		if err := instanceOf(env.Body, uri); err != nil {
			return "", "", nil, err
		}
		e, err := s.Handler.Create(uri, InstanceFromNode(env.Body))
		if err != nil {
			return "", "", nil, err
		}
		return ActionCreate + "Response", "", func(b *bytes.Buffer) {
			b.WriteString(`<t:ResourceCreated>`)
			e.write(b)
			b.WriteString(`</t:ResourceCreated>`)
		}, nil
	case ActionDelete:
		if err := s.Handler.Delete(uri, h.Selectors); err != nil {
			return "", "", nil, err
		}
		return ActionDelete + "Response", "", nil, nil
	case ActionEnumerate:
		items, err := s.Handler.Enumerate(uri)
		if err != nil {
			return "", "", nil, err
		}
		ctx := s.openEnum(items)
		return ActionEnumerate + "Response", "", func(b *bytes.Buffer) {
			b.WriteString(`<g:EnumerateResponse><g:EnumerationContext>`)
			b.WriteString(ctx)
			b.WriteString(`</g:EnumerationContext></g:EnumerateResponse>`)
		}, nil
	case ActionPull:
		ctx := env.Body.Value("EnumerationContext")
		max := 0
		if v := env.Body.Value("MaxElements"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return "", "", nil, FaultSchemaValidation("MaxElements must be a positive integer.")
			}
			max = n
		}
		items, more, ok := s.pull(ctx, max)
		if !ok {
			return "", "", nil, FaultInvalidEnumerationContext()
		}
		ns := uri
		if len(items) > 0 {
			ns = items[0].NS
		}
		return ActionPull + "Response", ns, func(b *bytes.Buffer) {
			b.WriteString(`<g:PullResponse>`)
			if more {
				element(b, "g:EnumerationContext", ctx)
			}
			b.WriteString(`<g:Items>`)
			for _, in := range items {
				in.write(b)
			}
			b.WriteString(`</g:Items>`)
			if !more {
				b.WriteString(`<g:EndOfSequence></g:EndOfSequence>`)
			}
			b.WriteString(`</g:PullResponse>`)
		}, nil
	case ActionRelease:
		s.pull(env.Body.Value("EnumerationContext"), -1)
		return ActionRelease + "Response", "", nil, nil
	}
	method, ok := strings.CutPrefix(h.Action, uri+"/")
	if !ok || method == "" || strings.Contains(method, "/") {
		return "", "", nil, FaultActionNotSupported(h.Action)
	}
	in := &Instance{Element: method + "_INPUT", NS: uri}
	if env.Body != nil {
		if env.Body.Name.Local != method+"_INPUT" {
			return "", "", nil, FaultSchemaValidation(fmt.Sprintf("The body of %s must be %s_INPUT.", method, method))
		}
		in = InstanceFromNode(env.Body)
	}
	out, err := s.Handler.Invoke(uri, method, h.Selectors, in)
	if err != nil {
		return "", "", nil, err
	}
	out.Element, out.NS = method+"_OUTPUT", uri
	return h.Action + "Response", uri, out.write, nil
}

// instanceOf refuses a Put or Create body that is not an instance of the
// class the ResourceURI names (its element, in its namespace): the
// properties of some other element are not the class's to take.
func instanceOf(body *Node, uri string) error {
	if body.Name.Local != ClassName(uri) || body.Name.Space != uri {
		return FaultSchemaValidation(fmt.Sprintf("The body is {%s}%s, not an instance of %s.", clip(body.Name.Space), clip(body.Name.Local), ClassName(uri)))
	}
	return nil
}

// FaultTo writes the fault answer to the request whose header is h, as
// ServeTo does for a refused request.
func (s *Server) FaultTo(w *bytes.Buffer, h Header, f *Fault) { s.fault(w, h, f) }

func (s *Server) fault(w *bytes.Buffer, h Header, f *Fault) {
	action := f.Action
	if action == "" {
		action = ActionFault
	}
	body := f.XML()
	marshalTo(w, Header{To: Anonymous, RelatesTo: h.MessageID, Action: action, MessageID: s.id()}, "", func(b *bytes.Buffer) { b.WriteString(body) })
}

// id numbers responses the way AMT does: a fixed uuid with a counter.
func (s *Server) id() string {
	s.mu.Lock()
	s.ids++
	n := s.ids
	s.mu.Unlock()
	return fmt.Sprintf("uuid:00000000-8086-8086-8086-%012X", n)
}

func (s *Server) openEnum(items []*Instance) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enums == nil {
		s.enums = make(map[string][]*Instance, 1)
	}
	if len(s.order) >= maxEnumerations {
		delete(s.enums, s.order[0])
		s.order = s.order[1:]
	}
	s.ids++
	ctx := fmt.Sprintf("%08X-0000-0000-0000-000000000000", s.ids)
	s.enums[ctx] = items
	s.order = append(s.order, ctx)
	return ctx
}

// pull takes up to max items (all for 0; none and close for -1) and
// reports whether more remain and whether the context was open.
func (s *Server) pull(ctx string, max int) ([]*Instance, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	items, ok := s.enums[ctx]
	if !ok {
		return nil, false, false
	}
	if max == 0 || max > len(items) {
		max = len(items)
	}
	if max < 0 {
		max = 0
		items = nil
	}
	out, rest := items[:max], items[max:]
	if len(rest) > 0 {
		s.enums[ctx] = rest
		return out, true, true
	}
	delete(s.enums, ctx)
	for i, c := range s.order {
		if c == ctx {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	return out, false, true
}
