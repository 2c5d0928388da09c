package pusher

import (
	"net/url"
	"testing"
	"time"
)

// docsApp has the credentials of the worked examples in the Pusher docs
// (auth signatures and the HTTP API reference).
var docsApp = &App{ID: "3", Key: "278d425bdf160c739803", Secret: "7ad3773142a6692b25b8"}

func TestChannelAuthDocsVectors(t *testing.T) {
	tests := []struct {
		name, socketID, channel, channelData, want string
	}{
		{"private", "1234.1234", "private-foobar", "",
			"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"},
		{"presence", "1234.1234", "presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`,
			"278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChannelAuth(docsApp, tt.socketID, tt.channel, tt.channelData); got != tt.want {
				t.Errorf("ChannelAuth = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestUserAuth(t *testing.T) {
	userData := `{"id":"12345"}`
	want := "278d425bdf160c739803:" + sign("7ad3773142a6692b25b8", "1234.1234::user::"+userData)
	if got := UserAuth(docsApp, "1234.1234", userData); got != want {
		t.Errorf("UserAuth = %s, want %s", got, want)
	}
}

func TestHTTPAPISignatureDocsVector(t *testing.T) {
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	if got, want := BodyMD5(body), "ec365a775a4cd0599faeb73354201b6f"; got != want {
		t.Fatalf("BodyMD5 = %s, want %s", got, want)
	}
	q := url.Values{
		"auth_key":       {"278d425bdf160c739803"},
		"auth_timestamp": {"1353088179"},
		"auth_version":   {"1.0"},
		"body_md5":       {"ec365a775a4cd0599faeb73354201b6f"},
	}
	wantToSign := "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	if got := StringToSign("post", "/apps/3/events", q); got != wantToSign {
		t.Errorf("StringToSign = %q, want %q", got, wantToSign)
	}
	const want = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	if got := SignRequest(docsApp.Secret, "POST", "/apps/3/events", q); got != want {
		t.Errorf("SignRequest = %s, want %s", got, want)
	}
	// AuthorizeRequest at the example's time builds the same query.
	q2 := url.Values{}
	AuthorizeRequest(docsApp, "POST", "/apps/3/events", q2, body, time.Unix(1353088179, 0))
	if got := q2.Get("auth_signature"); got != want {
		t.Errorf("AuthorizeRequest signature = %s, want %s", got, want)
	}
}

func TestStringToSignSortsAndLowercases(t *testing.T) {
	q := url.Values{"b": {"2"}, "Name": {"Something else"}, "auth_key": {"foo"}, "auth_signature": {"x"}}
	const want = "GET\n/p\nauth_key=foo&b=2&name=Something else"
	if got := StringToSign("GET", "/p", q); got != want {
		t.Errorf("StringToSign = %q, want %q", got, want)
	}
}

func TestVerifyAuth(t *testing.T) {
	good := ChannelAuth(docsApp, "1.2", "private-a", "")
	for _, tt := range []struct {
		got  string
		want bool
	}{
		{good, true},
		{good[:len(good)-1], false},
		{good + "0", false},
		{"", false},
		{ChannelAuth(docsApp, "1.3", "private-a", ""), false},
	} {
		if ok := verifyAuth(tt.got, good); ok != tt.want {
			t.Errorf("verifyAuth(%q) = %v, want %v", tt.got, ok, tt.want)
		}
	}
}
