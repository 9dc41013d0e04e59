#!/usr/bin/env bash
# Regenerates the DEMO-ONLY region in keys-example/. These keys are public:
# never use them for real patients. Usage: keys-example/make.sh [renkei-binary]
set -euo pipefail
cd "$(dirname "$0")"
bin=${1:-../target/release/renkei}
rm -rf ca clinic hospital recovery-hospital relay auditor crl.pem
"$bin" ca init --dir ca --name "みなと地域医療連携ネットワーク DEMO CA" --days 36500
"$bin" keygen --profile clinic --facility-id 1311234569 --name "さくら内科クリニック" --kind clinic
"$bin" keygen --profile hospital --facility-id 1317654323 --name "東都中央病院" --kind regional-support-hospital
"$bin" keygen --profile recovery-hospital --facility-id 1315555555 --name "みどりリハビリテーション病院" --kind recovery-hospital
"$bin" keygen --profile relay --facility-id relay-1 --name "みなと連携リレー" --kind relay --dns localhost --dns relay.demo.invalid
"$bin" keygen --profile auditor --facility-id audit-1 --name "みなと連携監査" --kind auditor
"$bin" ca crl --ca ca -o crl.pem --days 36500
for p in clinic hospital recovery-hospital relay auditor; do
  "$bin" ca issue --ca ca --request "$p/request.csr" -o "$p/issued.pem" --days 36500
  "$bin" profile install --profile "$p" --ca ca/ca.crt --crl crl.pem --cert "$p/issued.pem"
  rm "$p/issued.pem"
done
