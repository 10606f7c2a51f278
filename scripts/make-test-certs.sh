#!/usr/bin/env bash
# Make certificates for trying Copycat's TLS on one machine (tests, demos):
# a CA, N server certificates and a client certificate, all with openssl.
#
#   scripts/make-test-certs.sh DIR [N]
#
# writes into DIR (created if missing):
#   ca.pem, ca.key              the CA (ca.pem is every server's --tls-ca
#                               and the clients' --tls-ca)
#   server-I.pem, server-I.key  for I in 1..N: server I's --tls-cert and
#                               --tls-key, valid for 127.0.0.I, 127.0.0.1,
#                               ::1 and localhost, for serving and for
#                               calling peers
#   client.pem, client.key      a client certificate (--tls-cert/--tls-key
#                               of the client commands, for servers run
#                               with --tls-client-auth true)
#
# N defaults to 3. The keys are ECDSA P-256, valid for 825 days, and are
# not protected: these are test certificates, not production ones.
set -euo pipefail

usage() {
    echo "usage: $0 DIR [N]   (N servers, default 3)" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
dir=$1
n=${2:-3}
case $n in
    '' | *[!0-9]*) usage ;;
esac
[ "$n" -ge 1 ] && [ "$n" -le 254 ] || { echo "N must be between 1 and 254" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$dir"
cd "$dir"
days=825

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

# The CA.
key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=Copycat test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem

# sign NAME CN SAN EKU: NAME.pem and NAME.key, signed by the CA.
sign() {
    local name=$1 cn=$2 san=$3 eku=$4 ext
    key "$name.key"
    ext=$(mktemp)
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$eku" "$san" >"$ext"
    openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$days" -sha256 -extfile "$ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$ext"
}

for i in $(seq 1 "$n"); do
    # Servers present their certificate both when serving and when calling
    # a peer, so it is for server and client authentication.
    sign "server-$i" "copycat server $i" \
        "IP:127.0.0.$i,IP:127.0.0.1,IP:::1,DNS:localhost" "serverAuth,clientAuth"
done
sign client "copycat client" "DNS:copycat-client" "clientAuth"
rm -f ca.srl

for i in $(seq 1 "$n"); do
    openssl verify -CAfile ca.pem "server-$i.pem" >/dev/null
done
openssl verify -CAfile ca.pem client.pem >/dev/null
echo "wrote the CA, $n server certificates and a client certificate to $dir"
