package mebx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/amtsim/amtsim/internal/atomicfile"
)

// Store persists the settings of one device.
type Store interface {
	// Load returns the stored settings. A store that holds nothing yet
	// returns an error that matches ErrNoSettings.
	Load() (Settings, error)
	// Save replaces the stored settings as one atomic step.
	Save(Settings) error
}

// ErrNoSettings means the store has never been written.
var ErrNoSettings = errors.New("mebx: no settings stored")

// ErrCorrupt means the stored bytes are not a valid settings file.
var ErrCorrupt = errors.New("mebx: corrupt settings store")

// fileFormat tags the file so that a future layout can be told apart.
const fileFormat = "amtsim-mebx/1"

type fileImage struct {
	Format   string    `json:"format"`
	Settings *Settings `json:"settings"`
}

// Encode renders settings as the store file's bytes.
func Encode(s Settings) ([]byte, error) {
	b, err := json.MarshalIndent(fileImage{Format: fileFormat, Settings: &s}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("mebx: encode: %w", err)
	}
	return append(b, '\n'), nil
}

// Decode parses a store file and validates what it holds. Every failure
// wraps ErrCorrupt and says what is wrong.
func Decode(b []byte) (Settings, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return Settings{}, fmt.Errorf("%w: file is empty", ErrCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var img fileImage
	if err := dec.Decode(&img); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Settings{}, fmt.Errorf("%w: file is truncated (%v)", ErrCorrupt, err)
		}
		return Settings{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return Settings{}, fmt.Errorf("%w: trailing data after the settings", ErrCorrupt)
	}
	if img.Format != fileFormat {
		return Settings{}, fmt.Errorf("%w: format %q, want %q", ErrCorrupt, img.Format, fileFormat)
	}
	if img.Settings == nil {
		return Settings{}, fmt.Errorf("%w: no settings object", ErrCorrupt)
	}
	if err := img.Settings.Validate(); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return *img.Settings, nil
}

// FileStore keeps settings in one JSON file. Saves go to a temporary file in
// the same directory, are fsynced and renamed over the old file, and the
// directory is fsynced: a crash leaves either the old or the new file whole.
type FileStore struct {
	path string
	mu   sync.Mutex
	// beforeRename runs between the synced temp file and the rename; tests use
	// it to stand for a crash at that point.
	beforeRename func() error
}

// NewFileStore returns a store backed by path.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Path is the file the store writes.
func (f *FileStore) Path() string { return f.path }

// Load reads and validates the file. A temp file that a crash left beside
// it (it may hold a new password, PID/PPS, the admin's H(A1) and a private
// key) is removed first.
func (f *FileStore) Load() (Settings, error) {
	f.mu.Lock()
	_, err := atomicfile.RemoveStale(f.path)
	f.mu.Unlock()
	if err != nil {
		return Settings{}, fmt.Errorf("mebx: %w", err)
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return Settings{}, fmt.Errorf("%w: %s does not exist (run: amtsim mebx init --store %s)", ErrNoSettings, f.path, f.path)
	}
	if err != nil {
		return Settings{}, fmt.Errorf("mebx: read %s: %w", f.path, err)
	}
	s, err := Decode(b)
	if err != nil {
		return Settings{}, fmt.Errorf("%s: %w", f.path, err)
	}
	return s, nil
}

// Save writes the settings atomically.
func (f *FileStore) Save(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b, err := Encode(s)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := atomicfile.WriteWith(f.path, b, 0o600, atomicfile.Options{BeforeRename: f.beforeRename}); err != nil {
		return fmt.Errorf("mebx: save: %w", err)
	}
	return nil
}

// MemStore keeps settings in memory, for fleets too large for a file per
// device. It holds a copy, so callers cannot change it behind its back.
type MemStore struct {
	mu  sync.Mutex
	s   Settings
	set bool
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore { return &MemStore{} }

// Load returns the stored settings.
func (m *MemStore) Load() (Settings, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.set {
		return Settings{}, ErrNoSettings
	}
	return m.s, nil
}

// Save validates and stores a copy of s.
func (m *MemStore) Save(s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s, m.set = s, true
	return nil
}
