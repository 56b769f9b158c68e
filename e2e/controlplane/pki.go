package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the set of credentials one control plane uses, all written under dir.
type pki struct {
	dir string

	ca, frontProxyCA *authority

	CACert, CAKey           string // cluster CA (also the client CA and the CSR signing CA)
	ServingCert, ServingKey string // kube-apiserver serving certificate
	SAKey, SAPub            string // service-account token signing key pair
	// The aggregation layer's front proxy, as kubeadm sets it up: a separate CA trusted for
	// request-header authentication, and the client certificate the apiserver proxies with.
	FrontProxyCACert                          string
	FrontProxyClientCert, FrontProxyClientKey string
}

// authority is a CA certificate and its key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// clientCert is a client certificate and key, PEM encoded.
type clientCert struct {
	CertPEM, KeyPEM []byte
}

// certValidity is long enough for any test run and short enough to be obviously a test CA.
const certValidity = 7 * 24 * time.Hour

// frontProxyClientName is the CN of the front-proxy client certificate, the only name
// --requestheader-allowed-names accepts.
const frontProxyClientName = "front-proxy-client"

// newPKI generates the cluster CA, a serving certificate for the apiserver on loopback, a
// service-account key pair and the front-proxy CA and client certificate into dir.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir %s: %w", dir, err)
	}
	p := &pki{
		dir:                  dir,
		CACert:               filepath.Join(dir, "ca.crt"),
		CAKey:                filepath.Join(dir, "ca.key"),
		ServingCert:          filepath.Join(dir, "apiserver.crt"),
		ServingKey:           filepath.Join(dir, "apiserver.key"),
		SAKey:                filepath.Join(dir, "sa.key"),
		SAPub:                filepath.Join(dir, "sa.pub"),
		FrontProxyCACert:     filepath.Join(dir, "front-proxy-ca.crt"),
		FrontProxyClientCert: filepath.Join(dir, "front-proxy-client.crt"),
		FrontProxyClientKey:  filepath.Join(dir, "front-proxy-client.key"),
	}
	var err error
	if p.ca, err = newAuthority("meshmedic-sandbox-ca", p.CACert, p.CAKey); err != nil {
		return nil, err
	}
	if p.frontProxyCA, err = newAuthority("meshmedic-sandbox-front-proxy-ca", p.FrontProxyCACert, ""); err != nil {
		return nil, err
	}

	// The serving certificate names every way a client reaches the apiserver here, including the
	// in-cluster names and the first service IP (the kubernetes Service).
	servingKey, err := newKey()
	if err != nil {
		return nil, err
	}
	servingDER, err := p.ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.ParseIP(kubernetesServiceIP)},
	}, servingKey)
	if err != nil {
		return nil, fmt.Errorf("apiserver serving certificate: %w", err)
	}
	if err := writeCertKey(p.ServingCert, p.ServingKey, servingDER, servingKey); err != nil {
		return nil, err
	}

	fpKey, err := newKey()
	if err != nil {
		return nil, err
	}
	fpDER, err := p.frontProxyCA.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClientName},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, fpKey)
	if err != nil {
		return nil, fmt.Errorf("front-proxy client certificate: %w", err)
	}
	if err := writeCertKey(p.FrontProxyClientCert, p.FrontProxyClientKey, fpDER, fpKey); err != nil {
		return nil, err
	}

	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	if err := writePEM(p.SAKey, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(p.SAPub, "PUBLIC KEY", pubDER, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// newAuthority creates a self-signed CA and writes its certificate to certPath and, unless
// keyPath is empty, its key to keyPath.
func newAuthority(cn, certPath, keyPath string) (*authority, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA %s: %w", cn, err)
	}
	if keyPath == "" {
		err = writePEM(certPath, "CERTIFICATE", der, 0o644)
	} else {
		err = writeCertKey(certPath, keyPath, der, key)
	}
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

// sign issues a certificate from tmpl for key's public half.
func (a *authority) sign(tmpl *x509.Certificate, key crypto.Signer) ([]byte, error) {
	now := time.Now()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	return x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
}

// clientCert issues a client certificate for user (CN) in groups (O), signed by the CA.
func (p *pki) clientCert(user string, groups ...string) (clientCert, error) {
	key, err := newKey()
	if err != nil {
		return clientCert{}, err
	}
	der, err := p.ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key)
	if err != nil {
		return clientCert{}, fmt.Errorf("client certificate for %s: %w", user, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return clientCert{}, fmt.Errorf("marshal key for %s: %w", user, err)
	}
	return clientCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func (p *pki) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.cert.Raw})
}

// newKey returns an ECDSA P-256 key: every component accepts it (TLS, client certificates and
// ES256 service-account tokens) and it is generated in microseconds.
func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still produce valid certs.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func writeCertKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", keyPath, err)
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
