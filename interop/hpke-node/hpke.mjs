// PHIseal's hybrid field format checked against HPKE implementations that are not ours.
//
// Reads one JSON request on stdin, writes one JSON answer on stdout. Operations:
//   open-fields   {seed, tokens}          HPKE-9-KE compact JWEs -> their plaintexts and claims
//   seal-fields   {pub, kid, dst, fields} one CEK wrapped once (HPKE-9-KE), each field A256GCM
//   xwing-seal    {pub, info, plaintext}  @hpke/core + @hpke/hybridkem-x-wing, RFC 9180 suite
//   xwing-open    {seed, info, sealed}    the same suite, opening what cryptography sealed
//
// HPKE-9-KE (draft-ietf-jose-hpke-pq-pqt-00 over draft-ietf-jose-hpke-encrypt-20) needs the
// one-stage SHAKE256 KDF of draft-ietf-hpke-hpke. @hpke/core 1.9.0 implements only RFC 9180's
// HKDF key schedule, so the JWE operations use `hpke` (with @panva/hpke-noble, as Node 20's
// WebCrypto has no ML-KEM) and the X-Wing KEM is checked on its own with @hpke/core +
// @hpke/hybridkem-x-wing under HKDF-SHA256 / AES-256-GCM. Content encryption is node:crypto.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";

import { Aes256Gcm, CipherSuite as CoreSuite, HkdfSha256 } from "@hpke/core";
import { XWing } from "@hpke/hybridkem-x-wing";
import { AEAD_AES_256_GCM, KDF_SHAKE256, KEM_MLKEM768_X25519 } from "@panva/hpke-noble";
import { CipherSuite } from "hpke";

const ENC = "A256GCM";
const b64 = (bytes) => Buffer.from(bytes).toString("base64url");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64url"));
const utf8 = (text) => new TextEncoder().encode(text);

// The key-encryption HPKE info: Recipient_structure with no recipient_extra_info.
function recipientInfo(enc) {
  return new Uint8Array([...utf8("JOSE-HPKE rcpt"), 0xff, ...utf8(enc), 0xff]);
}

const hpke9 = () => new CipherSuite(KEM_MLKEM768_X25519, KDF_SHAKE256, AEAD_AES_256_GCM);

async function openFields({ seed, tokens }) {
  const suite = hpke9();
  const key = await suite.DeserializePrivateKey(unb64(seed));
  const out = [];
  for (const token of tokens) {
    const [protectedB64, encryptedKey, iv, ciphertext, tag] = token.split(".");
    const header = JSON.parse(Buffer.from(protectedB64, "base64url").toString("utf8"));
    if (header.alg !== "HPKE-9-KE" || header.enc !== ENC) {
      throw new Error(`unexpected alg/enc ${header.alg}/${header.enc}`);
    }
    const cek = await suite.Open(key, unb64(header.ek), unb64(encryptedKey), {
      info: recipientInfo(header.enc),
    });
    const decipher = createDecipheriv("aes-256-gcm", cek, unb64(iv));
    decipher.setAAD(Buffer.from(protectedB64, "ascii"));
    decipher.setAuthTag(unb64(tag));
    const plain = Buffer.concat([decipher.update(unb64(ciphertext)), decipher.final()]);
    out.push({ kid: header.kid, claims: header.phiseal, plaintext: plain.toString("utf8") });
  }
  return { fields: out };
}

async function sealFields({ pub, kid, dst, fields }) {
  const suite = hpke9();
  const key = await suite.DeserializePublicKey(unb64(pub));
  const cek = randomBytes(32);
  // One CEK for the whole batch, wrapped once: every field repeats "ek" and the encrypted key.
  const { encapsulatedSecret, ciphertext } = await suite.Seal(key, cek, {
    info: recipientInfo(ENC),
  });
  const tokens = fields.map(({ mid, path, plaintext }) => {
    const header = { alg: "HPKE-9-KE", enc: ENC, kid, ek: b64(encapsulatedSecret) };
    header.phiseal = { dst, mid, path };
    const protectedB64 = b64(utf8(JSON.stringify(header)));
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", cek, iv);
    cipher.setAAD(Buffer.from(protectedB64, "ascii"));
    const body = Buffer.concat([cipher.update(utf8(plaintext)), cipher.final()]);
    return [protectedB64, b64(ciphertext), b64(iv), b64(body), b64(cipher.getAuthTag())].join(".");
  });
  return { tokens };
}

function coreSuite() {
  const kem = new XWing();
  return { kem, suite: new CoreSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() }) };
}

async function xwingSeal({ pub, info, plaintext }) {
  const { kem, suite } = coreSuite();
  const recipientPublicKey = await kem.deserializePublicKey(unb64(pub));
  const sealed = await suite.seal({ recipientPublicKey, info: utf8(info) }, utf8(plaintext));
  return { sealed: b64(Buffer.concat([Buffer.from(sealed.enc), Buffer.from(sealed.ct)])) };
}

async function xwingOpen({ seed, info, sealed }) {
  const { kem, suite } = coreSuite();
  const recipientKey = await kem.deserializePrivateKey(unb64(seed));
  const bytes = unb64(sealed);
  const enc = bytes.slice(0, kem.encSize);
  const pt = await suite.open({ recipientKey, enc, info: utf8(info) }, bytes.slice(kem.encSize));
  return { plaintext: Buffer.from(pt).toString("utf8") };
}

const operations = {
  "open-fields": openFields,
  "seal-fields": sealFields,
  "xwing-seal": xwingSeal,
  "xwing-open": xwingOpen,
};

const request = JSON.parse(readFileSync(0, "utf8"));
const operation = operations[request.op];
if (!operation) {
  process.stderr.write(`unknown op ${request.op}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(await operation(request)));
