// keysync_like: a Keywhiz client that decodes the way Square's keysync does (Go's encoding/json:
// keys matched to struct fields ignoring case, the last matching key winning; a nil slice
// marshalled as null), used by test_keywhiz_go.py against a real keybridged. Written for this
// test from keysync's documented behaviour; no keysync code.
//
// Usage: keysync_like -url https://127.0.0.1:PORT -cert C -key K -ca BUNDLE CMD [ARGS]
//
//	list                  GET /secrets, print the decoded entries as JSON
//	get NAME              GET /secret/NAME
//	batch [NAME...]       POST /batchsecret; with no names the body is {"secrets":null}
//	batch-empty           POST /batchsecret with {"secrets":[]}
//
// Exit 0 with JSON on stdout when the answer is 200 and decodes; 3 with the status otherwise.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// The fields keysync reads from a Keywhiz SecretDeliveryResponse; metadata arrives flattened
// beside them (filename, mode, owner, group).
type Secret struct {
	Name             string
	Content          Content `json:"secret"`
	Length           uint64  `json:"secretLength"`
	Checksum         string
	CreatedAt        time.Time `json:"creationDate"`
	UpdatedAt        time.Time `json:"updateDate"`
	FilenameOverride *string   `json:"filename"`
	Mode             string
	Owner            string
	Group            string
}

// Content is base64 on the wire, bytes once decoded.
type Content []byte

func (c *Content) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	*c = d
	return nil
}

type out struct {
	Name     string  `json:"name"`
	Content  *string `json:"content,omitempty"`
	Length   uint64  `json:"length"`
	Checksum string  `json:"checksum"`
	Filename *string `json:"filename,omitempty"`
	Mode     string  `json:"mode"`
	Owner    string  `json:"owner"`
	Created  string  `json:"created"`
}

func conv(s Secret) out {
	o := out{Name: s.Name, Length: s.Length, Checksum: s.Checksum, Filename: s.FilenameOverride,
		Mode: s.Mode, Owner: s.Owner, Created: s.CreatedAt.UTC().Format(time.RFC3339)}
	if s.Content != nil {
		c := string(s.Content)
		o.Content = &c
	}
	return o
}

func fail(code int, format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "keysync_like: "+format+"\n", a...)
	os.Exit(code)
}

func main() {
	base := flag.String("url", "", "server URL")
	certF := flag.String("cert", "", "client certificate")
	keyF := flag.String("key", "", "client key")
	caF := flag.String("ca", "", "trust bundle")
	flag.Parse()
	if flag.NArg() < 1 {
		fail(2, "usage: see the source")
	}
	cert, err := tls.LoadX509KeyPair(*certF, *keyF)
	if err != nil {
		fail(2, "client certificate: %v", err)
	}
	pem, err := os.ReadFile(*caF)
	if err != nil {
		fail(2, "bundle: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail(2, "bundle: no certificates")
	}
	u, err := url.Parse(*base)
	if err != nil {
		fail(2, "url: %v", err)
	}
	// Like keysync: standard verification, including the server's host name against its SANs.
	tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert},
		RootCAs: pool, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	var resp *http.Response
	switch cmd := flag.Arg(0); cmd {
	case "list":
		resp, err = client.Get(*base + "/secrets")
	case "get":
		resp, err = client.Get(*base + "/secret/" + url.PathEscape(flag.Arg(1)))
	case "batch", "batch-empty":
		var names []string // nil: marshals as null, as keysync's steady-state poll does
		if cmd == "batch-empty" {
			names = []string{}
		}
		names = append(names, flag.Args()[1:]...) // appending nothing keeps nil nil
		body, _ := json.Marshal(struct {
			Secrets []string `json:"secrets"`
		}{names})
		os.Stderr.Write(append([]byte("request: "), append(body, '\n')...))
		resp, err = client.Post(*base+"/batchsecret", "application/json", bytes.NewReader(body))
	default:
		fail(2, "unknown command %q", cmd)
	}
	if err != nil {
		fail(4, "request: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		fail(4, "read: %v", err)
	}
	if resp.StatusCode != 200 {
		fmt.Printf("{\"status\":%d}\n", resp.StatusCode)
		os.Exit(3)
	}
	var res interface{}
	if flag.Arg(0) == "get" {
		var s Secret
		if err := json.Unmarshal(raw, &s); err != nil {
			fail(5, "decode: %v", err)
		}
		res = conv(s)
	} else {
		var l []Secret
		if err := json.Unmarshal(raw, &l); err != nil {
			fail(5, "decode: %v", err)
		}
		o := []out{}
		for _, s := range l {
			o = append(o, conv(s))
		}
		res = o
	}
	enc, _ := json.Marshal(res)
	fmt.Println(string(enc))
}
