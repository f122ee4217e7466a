# python3 wit/vectors.py > wit/vectors.json
# Computes wit/vectors.json from the WIT's prose alone (Python's standard
# library), as a third party would.
import hmac, hashlib, base64, zlib, json, struct

def keyed(key, domain, parts):
    m = hmac.new(key, digestmod=hashlib.sha256)
    for p in [domain.encode()] + [x.encode() for x in parts]:
        m.update(struct.pack('>I', len(p))); m.update(p)
    return m.hexdigest()

B62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
def checksum(text):
    n = zlib.crc32(text.encode()) & 0xffffffff
    out = ''
    for _ in range(6):
        out = B62[n % 62] + out; n //= 62
    return out

TOKEN_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
def token_from(random):
    return ''.join(TOKEN_ALPHABET[b & 63] for b in random)

k1 = bytes(range(32))
k2 = bytes.fromhex('5a' * 40)
rand = hashlib.sha512(b'rcpat vectors').digest()[:43]
tok = token_from(rand)
v = {
  "about": "Test vectors for what a host computes or stores itself (wit/world.wit says where each is used). Byte strings are lowercase hex; text is UTF-8. Generated from the WIT's prose alone by an independent script; every host's tests check its code against this file.",
  "backup-code": {
    "alphabet": "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz",
    "length": 8
  },
  "backup-code-hash": [],
  "email-code-hash": [],
  "token-hash": [],
  "token-from-random": [{"random": rand.hex(), "token": tok}],
  "prefixed-token": [],
  "password": [{
    "password": "correct horse battery staple",
    "digest": hashlib.sha256(b'correct horse battery staple').hexdigest(),
    "bcrypt": "$2b$04$tXRkhwjCrGAJhwP2Ub18AuUEeLdzMO8HNGQA.xlUnq3xJaqaYpDJ2"
  }],
  "last-token-part": [{"token": tok, "last-token-part": tok[-6:]}]
}
for key, uid, code in [(k1, "PXobE9bN8o6kTEvrc", "pPERMaig"), (k1, "u", "23456789"), (k2, "ÄnnaÜser", "zzzzzzzz")]:
    v["backup-code-hash"].append({"code-key": key.hex(), "user-id": uid, "code": code, "hash": keyed(key, "backup-code", [uid, code])})
for key, salt, digits in [(k1, "00112233445566778899aabbccddeeff", "123456"), (k2, "ffeeddccbbaa99887766554433221100", "000000")]:
    v["email-code-hash"].append({"code-key": key.hex(), "salt": salt, "digits": digits, "hash": keyed(key, "email-code", [salt, digits])})
for t in [tok, "b3_ftQ3vAXdjwSwAtmaondKkxOAiclO4lwbhNYwURW4", "rcpat_" + tok + checksum("rcpat_" + tok)]:
    v["token-hash"].append({"token": t, "hashed": base64.b64encode(hashlib.sha256(t.encode()).digest()).decode()})
for prefix in ["rcpat_", "ACME"]:
    body = prefix + tok
    v["prefixed-token"].append({"prefix": prefix, "random-part": tok, "token": body + checksum(body)})
v["checksum"] = [{"text": t, "checksum": checksum(t)} for t in ["123456789", "", "rcpat_" + tok]]
print(json.dumps(v, indent=2, ensure_ascii=False))
