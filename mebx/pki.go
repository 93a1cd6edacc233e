package mebx

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/amtsim/amtsim/hello"
)

// PKI is MEBx's "TLS PKI" menu: remote configuration (AMT 3.0 and later),
// the trusted root certificate hashes a provisioning certificate must
// chain to, and the PKI DNS suffix its name must fall under
// (docs/protocol.md §11). The SCS FQDN of the same menu is Settings.SCSFQDN.
type PKI struct {
	// RemoteConfig is "Remote Configuration": on, a device not yet
	// provisioned sends PKI Hellos and accepts a provisioning certificate.
	RemoteConfig bool `json:"remote_config"`
	// DNSSuffix is the "PKI DNS Suffix"; when empty the DHCP option 15
	// domain stands in.
	DNSSuffix string `json:"dns_suffix,omitempty"`
	// Hashes are the trusted root certificate hashes: the factory's
	// (Default) first, then those added in MEBx.
	Hashes []RootHash `json:"hashes,omitempty"`
}

// HashAlgorithm names the algorithm of a root certificate hash: the
// Hello's hash type, which carries the table's entries as they are
// (docs/protocol.md §11).
type HashAlgorithm = hello.HashType

// The hash algorithms of AMT's certificate hash table.
const (
	SHA1   = hello.HashSHA1
	SHA256 = hello.HashSHA256
	SHA384 = hello.HashSHA384
)

func parseAlgorithm(s string) (HashAlgorithm, bool) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "")) {
	case "sha1":
		return SHA1, true
	case "sha256":
		return SHA256, true
	case "sha384":
		return SHA384, true
	}
	return 0, false
}

// RootHash is one entry of the certificate hash table.
type RootHash struct {
	Name      string        `json:"name"`
	Algorithm HashAlgorithm `json:"algorithm"`
	Hash      []byte        `json:"hash"`
	Active    bool          `json:"active"`
	// Default marks a factory hash: it can be made inactive, not deleted.
	Default bool `json:"default,omitempty"`
}

// Limits of AMT 5's table (Intel AMT SDK, "Root Certificate Hashes":
// before Release 7.0, up to 20 embedded hashes plus 3 custom ones).
const (
	MaxDefaultHashes = 20
	MaxCustomHashes  = 3
	maxHashName      = 32
)

// ParseRootHash reads a custom hash as typed into MEBx:
//
//	NAME=ALGORITHM:HEX
//
// ALGORITHM is sha1, sha256 or sha384; HEX is the certificate's
// thumbprint, with or without ':' or ' ' between the bytes (as openssl and
// Windows print them). The name is 1–32 printable ASCII characters without
// '='. The hash is active.
func ParseRootHash(s string) (RootHash, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return RootHash{}, fmt.Errorf("mebx: %w: certificate hash %q is not NAME=ALGORITHM:HEX", ErrInvalidSetting, s)
	}
	name = strings.TrimSpace(name)
	if err := checkHashName(name); err != nil {
		return RootHash{}, err
	}
	alg, hx, ok := strings.Cut(rest, ":")
	if !ok {
		return RootHash{}, fmt.Errorf("mebx: %w: certificate hash %q: want ALGORITHM:HEX after the name", ErrInvalidSetting, name)
	}
	a, ok := parseAlgorithm(strings.TrimSpace(alg))
	if !ok {
		return RootHash{}, fmt.Errorf("mebx: %w: certificate hash %q: algorithm %q (want sha1, sha256 or sha384)", ErrInvalidSetting, name, alg)
	}
	h, err := hex.DecodeString(strings.NewReplacer(":", "", " ", "").Replace(hx))
	if err != nil {
		return RootHash{}, fmt.Errorf("mebx: %w: certificate hash %q is not hexadecimal", ErrInvalidSetting, name)
	}
	if len(h) != a.Size() {
		return RootHash{}, fmt.Errorf("mebx: %w: certificate hash %q: %d bytes for %s (want %d)", ErrInvalidSetting, name, len(h), a, a.Size())
	}
	return RootHash{Name: name, Algorithm: a, Hash: h, Active: true}, nil
}

// String is the hash in ParseRootHash's form.
func (h RootHash) String() string {
	return h.Name + "=" + h.Algorithm.String() + ":" + hex.EncodeToString(h.Hash)
}

func checkHashName(name string) error {
	if name == "" || len(name) > maxHashName {
		return fmt.Errorf("mebx: %w: certificate hash name %q (1 to %d characters)", ErrInvalidSetting, name, maxHashName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == '=' {
			return fmt.Errorf("mebx: %w: certificate hash name %q has character %q", ErrInvalidSetting, name, c)
		}
	}
	return nil
}

// Active are the hashes a PKI Hello carries and a provisioning certificate
// may chain to, in table order.
func (p *PKI) Active() []RootHash {
	var out []RootHash
	for _, h := range p.Hashes {
		if h.Active {
			out = append(out, h)
		}
	}
	return out
}

// anyActive is len(p.Active()) > 0 without building the list: a device
// asks it before every Hello.
func (p *PKI) anyActive() bool {
	return slices.ContainsFunc(p.Hashes, func(h RootHash) bool { return h.Active })
}

// AddHash adds a custom hash, or replaces the custom hash of that name.
func (p *PKI) AddHash(h RootHash) error {
	if i := slices.IndexFunc(p.Hashes, func(x RootHash) bool { return strings.EqualFold(x.Name, h.Name) }); i >= 0 {
		if p.Hashes[i].Default {
			return fmt.Errorf("mebx: %w: %q is a factory hash and cannot be replaced", ErrInvalidSetting, h.Name)
		}
		p.Hashes = slices.Clone(p.Hashes)
		p.Hashes[i] = h
		return nil
	}
	if p.custom() >= MaxCustomHashes {
		return fmt.Errorf("mebx: %w: the table holds %d custom hashes already (AMT's limit); delete one first", ErrInvalidSetting, MaxCustomHashes)
	}
	for _, x := range p.Hashes {
		if x.Algorithm == h.Algorithm && bytes.Equal(x.Hash, h.Hash) {
			return fmt.Errorf("mebx: %w: that hash is in the table already as %q", ErrInvalidSetting, x.Name)
		}
	}
	p.Hashes = append(slices.Clone(p.Hashes), h)
	return nil
}

// SetActive turns a hash (factory or custom) on or off by name.
func (p *PKI) SetActive(name string, active bool) error {
	i := slices.IndexFunc(p.Hashes, func(x RootHash) bool { return strings.EqualFold(x.Name, name) })
	if i < 0 {
		return fmt.Errorf("mebx: %w: no certificate hash named %q (mebx show lists them)", ErrInvalidSetting, name)
	}
	p.Hashes = slices.Clone(p.Hashes)
	p.Hashes[i].Active = active
	return nil
}

// DeleteHash removes a custom hash; factory hashes can only be made
// inactive.
func (p *PKI) DeleteHash(name string) error {
	i := slices.IndexFunc(p.Hashes, func(x RootHash) bool { return strings.EqualFold(x.Name, name) })
	if i < 0 {
		return fmt.Errorf("mebx: %w: no certificate hash named %q", ErrInvalidSetting, name)
	}
	if p.Hashes[i].Default {
		return fmt.Errorf("mebx: %w: %q is a factory hash: make it inactive instead (pki.hash.inactive=%s)", ErrInvalidSetting, name, name)
	}
	p.Hashes = slices.Delete(slices.Clone(p.Hashes), i, i+1)
	return nil
}

func (p *PKI) custom() int {
	n := 0
	for _, h := range p.Hashes {
		if !h.Default {
			n++
		}
	}
	return n
}

// Clone returns a copy that shares no slice with p.
func (p PKI) Clone() PKI {
	c := p
	c.Hashes = make([]RootHash, len(p.Hashes))
	for i, h := range p.Hashes {
		h.Hash = slices.Clone(h.Hash)
		c.Hashes[i] = h
	}
	if len(p.Hashes) == 0 {
		c.Hashes = nil
	}
	return c
}

// validate checks a table that came from a file.
func (p *PKI) validate() error {
	if err := checkName("pki.dns_suffix", p.DNSSuffix, 191); err != nil {
		return err
	}
	defaults, names := 0, map[string]bool{}
	for i, h := range p.Hashes {
		if err := checkHashName(h.Name); err != nil {
			return err
		}
		if names[strings.ToLower(h.Name)] {
			return fmt.Errorf("mebx: %w: certificate hash name %q twice", ErrInvalidSetting, h.Name)
		}
		names[strings.ToLower(h.Name)] = true
		if h.Algorithm.Size() == 0 || len(h.Hash) != h.Algorithm.Size() {
			return fmt.Errorf("mebx: %w: certificate hash %d (%q): algorithm %d with %d bytes", ErrInvalidSetting, i+1, h.Name, h.Algorithm, len(h.Hash))
		}
		if h.Default {
			defaults++
		}
	}
	if defaults > MaxDefaultHashes || len(p.Hashes)-defaults > MaxCustomHashes {
		return fmt.Errorf("mebx: %w: %d factory and %d custom certificate hashes (at most %d and %d)", ErrInvalidSetting,
			defaults, len(p.Hashes)-defaults, MaxDefaultHashes, MaxCustomHashes)
	}
	return nil
}

// factoryHash is a default table entry from its thumbprint in hex.
func factoryHash(name string, a HashAlgorithm, thumbprint string) RootHash {
	h, err := hex.DecodeString(thumbprint)
	if err != nil || len(h) != a.Size() {
		panic("mebx: bad factory hash " + name) // a typo in the tables below
	}
	return RootHash{Name: name, Algorithm: a, Hash: h, Active: true, Default: true}
}

// AMT5RootHashes is the factory table of AMT 3.0–5.x firmware: SHA-1
// thumbprints of the five public roots Intel embedded for remote
// configuration (Intel AMT SDK "Root Certificate Hashes"; the list as
// published for vPro provisioning in 2010, before VeriSign's G2/G5 roots
// were added by later firmware). Three of them are still in Debian's
// ca-certificates; TestFactoryHashesMatchPublicRoots checks those.
func AMT5RootHashes() []RootHash {
	return []RootHash{
		factoryHash("VeriSign Class 3 Primary CA-G1", SHA1, "742c3192e607e424eb4549542be1bbc53e6174e2"),
		factoryHash("VeriSign Class 3 Primary CA-G3", SHA1, "132d0d45534b6997cdb2d5c339e25576609b5cc6"),
		factoryHash("Go Daddy Class 2 CA", SHA1, "2796bae63f1801e277261ba0d77770028f20eee4"),
		factoryHash("Comodo AAA CA", SHA1, "d1eb23a46d17d68fd92564c2f1f1601764d8e349"),
		factoryHash("Starfield Class 2 CA", SHA1, "ad7e1c28b064ef8f6003402014c3d0e3370eb58a"),
	}
}

// ModernRootHashes is a factory table of AMT 11-era firmware: SHA-256
// thumbprints (SHA-1 defaults were removed in ME 11.0). These ten are the
// public roots that both a real device's Hello (the sample in MeshCentral's
// provisioning server) and Debian's ca-certificates carry.
func ModernRootHashes() []RootHash {
	return []RootHash{
		factoryHash("Go Daddy Class 2 CA", SHA256, "c3846bf24b9e93ca64274c0ec67c1ecc5e024ffcacd2d74019350e81fe546ae4"),
		factoryHash("Go Daddy Root CA G2", SHA256, "45140b3247eb9cc8c5b4f0d7b53091f73292089e6e5a63e2749dd3aca9198eda"),
		factoryHash("Comodo AAA CA", SHA256, "d7a7a0fb5d7e2731d771e9484ebcdef71d5f0c3e0a2948782bc83ee0ea699ef4"),
		factoryHash("Starfield Class 2 CA", SHA256, "1465fa205397b876faa6f0a9958e5590e40fcc7faa4fb7c2c8677521fb5fb658"),
		factoryHash("Starfield Root CA G2", SHA256, "2ce1cb0bf9d2f9e102993fbe215152c3b2dd0cabde1c68e5319b839154dbb7f5"),
		factoryHash("Entrust.net CA (2048)", SHA256, "6dc47172e01cbcb0bf62580d895fe2b8ac9ad4f873801e0c10b9c837d21eb177"),
		factoryHash("Entrust Root CA", SHA256, "73c176434f1bc6d5adf45b0e76e727287c8de57616c1e6e6141a2b2cbc7d8e4c"),
		factoryHash("Entrust Root CA G2", SHA256, "43df5774b03e7fef5fe40d931a7bedf1bb2e6b42738c4e6d3841103d3aa7f339"),
		factoryHash("GlobalSign Root CA R3", SHA256, "cbb522d7b7f127ad6a0113865bdf1cd4102e7d0759af635a7cf4720dc963c53b"),
		factoryHash("DigiCert Global Root CA", SHA256, "4348a0e9444c78cb265e058d5e8944b4d84f9662bd26db257f8934a443c70161"),
	}
}
