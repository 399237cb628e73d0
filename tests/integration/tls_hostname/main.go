// tls_hostname: connect to a TLS server the way keysync (and any Go client) does - crypto/tls with
// the trust bundle as RootCAs and the URL's host as ServerName, so the server certificate must
// carry a DNS or IP SAN matching it - and print "ok" or Go's own error. Used by
// test_ca_sans.sh to show that keybridge-ca's server SVIDs with --dns/--ip pass, and that a
// URI-only SVID fails with "certificate is not valid for any names".
//
//	tls_hostname BUNDLE.pem HOST PORT
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: tls_hostname BUNDLE.pem HOST PORT")
		os.Exit(2)
	}
	pem, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Println("no certificates in the bundle")
		os.Exit(1)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(os.Args[2], os.Args[3]),
		&tls.Config{RootCAs: roots, ServerName: os.Args[2], MinVersion: tls.VersionTLS12})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	c.Close()
	fmt.Println("ok")
}
