use std::io::Read;
use renkei_fuzz::*;
use renkei::pki::TrustStore;

fn entries(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut v = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut d = Vec::new();
        e.read_to_end(&mut d).unwrap();
        v.push((p, d));
    }
    v
}

fn build(es: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in es {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, &d[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn main() {
    let r = &*REGION;
    // 1. duplicate manifest.json before manifest.sig
    let t = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/seeds/package_inner/referral.tar")).unwrap();
    let es = entries(&t);
    println!("entries: {:?}", es.iter().map(|e| (&e.0, e.1.len())).collect::<Vec<_>>());
    let mut dup = es.clone();
    let n = dup.len();
    let mut decoy = dup[n - 2].clone();
    decoy.1 = b"{\"decoy\": true}".to_vec();
    dup.insert(n - 2, decoy);
    println!("dup manifest: {:?}", open_as_hospital(&encrypt_to_hospital(&build(&dup))).map(|o| o.manifest.package_id));
    // 1b. same but the later one is the decoy (should fail the signature)
    let mut dup2 = es.clone();
    let mut decoy = dup2[n - 2].clone();
    decoy.1 = b"{\"decoy\": true}".to_vec();
    dup2.insert(n - 1, decoy);
    println!("dup manifest (decoy last): {:?}", open_as_hospital(&encrypt_to_hospital(&build(&dup2))).map(|o| o.manifest.package_id));

    // 2. CRL with trailing bytes
    let der = pem::parse(&r.crl_pem).unwrap().into_contents();
    let mut trailing = der.clone();
    trailing.extend_from_slice(b"\x00\x00garbage");
    match TrustStore::new(&r.ca_pem, Some(&trailing)) {
        Ok(ts) => println!("CRL+trailing accepted by new; verify hospital: {:?}", ts.verify(&r.profile("hospital").cert.der, Some(r.at)).map(|i| i.fingerprint).map_err(|e| e.to_string())),
        Err(e) => println!("CRL+trailing refused: {e}"),
    }
    // 3. CA with trailing bytes
    let ca_der = pem::parse(&r.ca_pem).unwrap().into_contents();
    let mut ca_t = ca_der.clone();
    ca_t.extend_from_slice(b"junk");
    match TrustStore::new(&ca_t, Some(&r.crl_pem)) {
        Ok(ts) => println!("CA+trailing accepted; verify: {:?}", ts.verify(&r.profile("hospital").cert.der, Some(r.at)).map(|i| i.fingerprint).map_err(|e| e.to_string())),
        Err(e) => println!("CA+trailing refused: {e}"),
    }
}
