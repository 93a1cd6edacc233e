package scenarios

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is a mistake in a scenario file, at a line and column of it.
type Error struct {
	File         string
	Line, Column int
	Msg          string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
}

// Pos is where a mapping began in the file; the decoder fills a struct's
// Pos field, so that checks across fields can say where.
type Pos struct{ Line, Column int }

// decoder binds YAML nodes to the scenario structs strictly: a key the
// struct does not have, a key given twice, a value of the wrong kind, each
// is an Error at that node. yaml.v3's own KnownFields reports lines only,
// and a bad value inside a custom type not at all.
type decoder struct{ file string }

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...)}
}

// valueDecoder is implemented by types that read their own node (and
// check their own values).
type valueDecoder interface {
	decodeYAML(d *decoder, n *yaml.Node) error
}

var (
	posType      = reflect.TypeFor[Pos]()
	durationType = reflect.TypeFor[time.Duration]()
)

func (d *decoder) decode(n *yaml.Node, v reflect.Value) error {
	if n.Kind == yaml.AliasNode {
		return d.errorf(n, "aliases are not allowed in a scenario")
	}
	if v.CanAddr() {
		if vd, ok := v.Addr().Interface().(valueDecoder); ok {
			return vd.decodeYAML(d, n)
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := d.decode(n, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		return d.decodeStruct(n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(n, "want a list, not %s", describe(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode || v.Type().Key().Kind() != reflect.String {
			return d.errorf(n, "want a mapping, not %s", describe(n))
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return d.errorf(k, "want a plain key, not %s", describe(k))
			}
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				return d.errorf(k, "%q is given twice", k.Value)
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if e.Kind() == reflect.String && val.Kind == yaml.ScalarNode && val.Tag != "!!null" {
				// Attribute values are compared as text: status: 2054
				// and status: "2054" are one.
				e.SetString(val.Value)
			} else if err := d.decode(val, e); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errorf(n, "want a single value, not %s", describe(n))
	}
	s := n.Value
	if v.Type() == durationType {
		t, err := time.ParseDuration(s)
		if err != nil || t < 0 {
			return d.errorf(n, "%q is not a duration (like 500ms, 30s, 2m)", s)
		}
		v.SetInt(int64(t))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" {
			return d.errorf(n, "want text, not %s (quote it)", describe(n))
		}
		v.SetString(s)
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return d.errorf(n, "want true or false, not %q", s)
		}
		b, _ := strconv.ParseBool(strings.ToLower(s))
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(s, 0, 64)
		if n.Tag != "!!int" || err != nil {
			return d.errorf(n, "want a whole number, not %q", s)
		}
		if i < 0 {
			return d.errorf(n, "%d must not be negative", i)
		}
		v.SetInt(i)
	case reflect.Uint64:
		u, err := strconv.ParseUint(s, 0, 64)
		if n.Tag != "!!int" || err != nil {
			return d.errorf(n, "want a whole number that is not negative, not %q", s)
		}
		v.SetUint(u)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if (n.Tag != "!!float" && n.Tag != "!!int") || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return d.errorf(n, "want a number, not %q", s)
		}
		v.SetFloat(f)
	default:
		return d.errorf(n, "cannot read a value into %s", v.Type())
	}
	return nil
}

// decodeStruct reads a mapping into a struct by its fields' yaml tags.
func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(n, "want a mapping (key: value lines), not %s", describe(n))
	}
	t := v.Type()
	fields := map[string]int{}
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type == posType {
			v.Field(i).Set(reflect.ValueOf(Pos{n.Line, n.Column}))
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		keys = append(keys, name)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.errorf(k, "want a plain key, not %s", describe(k))
		}
		fi, ok := fields[k.Value]
		if !ok {
			return d.errorf(k, "unknown key %q (keys here: %s)", k.Value, strings.Join(keys, ", "))
		}
		if seen[k.Value] {
			return d.errorf(k, "%q is given twice", k.Value)
		}
		seen[k.Value] = true
		if choice := t.Field(fi).Tag.Get("choice"); choice != "" {
			if _, err := d.oneOf(val, k.Value, strings.Split(choice, ",")...); err != nil {
				return err
			}
		}
		if err := d.decode(val, v.Field(fi)); err != nil {
			return err
		}
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "that"
}

// oneOf reads a scalar that must be one of allowed.
func (d *decoder) oneOf(n *yaml.Node, what string, allowed ...string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", d.errorf(n, "want %s (%s), not %s", what, strings.Join(allowed, ", "), describe(n))
	}
	for _, a := range allowed {
		if n.Value == a {
			return a, nil
		}
	}
	return "", d.errorf(n, "%q is not %s (%s)", n.Value, what, strings.Join(allowed, ", "))
}
