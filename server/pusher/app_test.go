package pusher

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNewAppsDefaults(t *testing.T) {
	apps, err := NewApps()
	if err != nil {
		t.Fatal(err)
	}
	a, ok := apps.ByKey(DefaultAppKey)
	if !ok || a.ID != DefaultAppID || a.Secret != DefaultAppSecret || !a.ClientEvents {
		t.Fatalf("default app = %+v", a)
	}
	if a.MaxPresenceMembers != 100 || a.MaxUserInfoBytes != 1024 || a.MaxPresenceIDLen != 128 ||
		a.MaxEventBytes != 10240 || a.MaxChannelsPerConn != 100 || a.ClientEventsPerSecond != 10 ||
		a.ActivityTimeout != 120*time.Second || a.MaxCacheChannels != 1000 || a.MaxCacheBytes != 16<<20 {
		t.Fatalf("default limits = %+v", a)
	}
	if _, ok := apps.Default(); !ok {
		t.Fatal("Default() not found")
	}
	b, err := NewApps(App{ID: "1", Key: "k", Secret: "s", MaxEventBytes: 5})
	if err != nil {
		t.Fatal(err)
	}
	if x, _ := b.ByID("1"); x.MaxEventBytes != 5 || x.MaxChannelsPerConn != 100 {
		t.Fatalf("explicit limit lost or default missing: %+v", x)
	}
	if _, ok := b.Default(); ok {
		t.Fatal("Default() found in a registry without the default app")
	}
}

func TestNewAppsErrors(t *testing.T) {
	tests := []struct {
		name string
		apps []App
		err  error
	}{
		{"no secret", []App{{ID: "1", Key: "k"}}, ErrInvalidApp},
		{"slash in key", []App{{ID: "1", Key: "a/b", Secret: "s"}}, ErrInvalidApp},
		{"space in id", []App{{ID: "a b", Key: "k", Secret: "s"}}, ErrInvalidApp},
		{"negative limit", []App{{ID: "1", Key: "k", Secret: "s", MaxEventBytes: -1}}, ErrInvalidApp},
		{"negative cache channels", []App{{ID: "1", Key: "k", Secret: "s", MaxCacheChannels: -1}}, ErrInvalidApp},
		{"negative cache bytes", []App{{ID: "1", Key: "k", Secret: "s", MaxCacheBytes: -1}}, ErrInvalidApp},
		{"fractional timeout", []App{{ID: "1", Key: "k", Secret: "s", ActivityTimeout: 1500 * time.Millisecond}}, ErrInvalidApp},
		{"duplicate id", []App{{ID: "1", Key: "k", Secret: "s"}, {ID: "1", Key: "k2", Secret: "s"}}, ErrDuplicateApp},
		{"duplicate key", []App{{ID: "1", Key: "k", Secret: "s"}, {ID: "2", Key: "k", Secret: "s"}}, ErrDuplicateApp},
	}
	for _, tt := range tests {
		if _, err := NewApps(tt.apps...); !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestLoadAppsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	obj := write("obj.json", `{"apps":[
		{"id":"1","key":"k1","secret":"s1","client_events":true,"max_presence_members":5,"activity_timeout":30,
		 "max_cache_channels":7,"max_cache_bytes":4096},
		{"id":"2","key":"k2","secret":"s2"}]}`)
	apps, err := LoadAppsFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := apps.ByKey("k1")
	a2, _ := apps.ByID("2")
	if a1 == nil || a2 == nil || !a1.ClientEvents || a1.MaxPresenceMembers != 5 || a1.ActivityTimeout != 30*time.Second ||
		a1.MaxCacheChannels != 7 || a1.MaxCacheBytes != 4096 ||
		a2.ClientEvents || a2.MaxPresenceMembers != 100 || a2.MaxCacheChannels != 1000 || a2.MaxCacheBytes != 16<<20 {
		t.Fatalf("loaded %+v %+v", a1, a2)
	}
	arr := write("arr.json", `[{"id":"x","key":"kx","secret":"sx"}]`)
	if apps, err := LoadAppsFile(arr); err != nil {
		t.Fatalf("bare array: %v", err)
	} else if _, ok := apps.ByID("x"); !ok {
		t.Fatal("bare array: app x not loaded")
	}
	for name, content := range map[string]string{
		"typo.json":  `{"apps":[{"id":"1","key":"k","secret":"s","max_members":3}]}`,
		"empty.json": `{"apps":[]}`,
		"bad.json":   `{"apps":`,
		"dup.json":   `[{"id":"1","key":"k","secret":"s"},{"id":"1","key":"k2","secret":"s"}]`,
	} {
		if _, err := LoadAppsFile(write(name, content)); err == nil {
			t.Errorf("%s: loaded, want an error", name)
		}
	}
	if _, err := LoadAppsFile(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file loaded")
	}

	// LoadApps: file, else flags, else default.
	if apps, err := LoadApps(obj, App{}); err != nil {
		t.Fatalf("LoadApps(file) = %v", err)
	} else if _, ok := apps.ByID("1"); !ok {
		t.Fatal("LoadApps(file): app 1 not loaded")
	} else if _, ok := apps.ByID("2"); !ok {
		t.Fatal("LoadApps(file): app 2 not loaded")
	}
	if apps, err := LoadApps("", App{ID: "f", Key: "fk", Secret: "fs"}); err != nil {
		t.Fatalf("LoadApps(flags) = %v", err)
	} else if _, ok := apps.ByID("f"); !ok {
		t.Fatal("LoadApps(flags): app f not loaded")
	}
	if apps, err := LoadApps("", App{}); err != nil {
		t.Fatalf("LoadApps(default) = %v", err)
	} else if _, ok := apps.ByID(DefaultAppID); !ok {
		t.Fatal("LoadApps(default): no default app")
	}
	if _, err := LoadApps(obj, App{ID: "f", Key: "fk", Secret: "fs"}); err == nil {
		t.Fatal("LoadApps with file and flags: no error")
	}
	if _, err := LoadApps("", App{Key: "only-key"}); err == nil {
		t.Fatal("LoadApps with an incomplete flag app: no error")
	}
}

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoRooms) {
		t.Fatalf("New without rooms: %v", err)
	}
	p, err := New(Config{Rooms: newFakeRooms()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.apps.ByID(DefaultAppID); !ok {
		t.Fatal("nil Apps does not mean the default app")
	}
}
