// Helper for tests/test_roomcrypto.py (Python ↔ JS cross-check). Reads one JSON request on
// stdin (bytes as standard base64), answers one JSON object on stdout. Not a test file itself.
import {
  EnvelopeHeader, KdfParams, b64, openEnvelope, passwordKey, roomKeys, seal, signJoin, unb64,
} from "../js/roomcrypto.js";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);

const kRoom = unb64(req.k_room);
const header = new EnvelopeHeader(req.header);
const out = {};
// Python sealed → JS opens.
out.opened = b64(await openEnvelope(kRoom, header, unb64(req.open.nonce), unb64(req.open.ciphertext)));
// JS seals → Python opens.
const sealed = await seal(kRoom, header, unb64(req.seal.plaintext));
out.sealed = { nonce: b64(sealed.nonce), ciphertext: b64(sealed.ciphertext) };
// Sub-keys of a given K, then a join signature with JS's own admSeed → Python verifies.
const keys = await roomKeys(unb64(req.join.K), req.join.room);
out.room_keys = { k_room: b64(keys.kRoom), adm_seed: b64(keys.admSeed), adm_pk: b64(keys.admPk) };
const j = req.join;
out.sig = b64(await signJoin(keys.admSeed, j.origin, j.room, unb64(j.nonce), j.conn));
// Password key of a fresh password with Python-made parameters (random salt).
out.K = b64(await passwordKey(req.kdf.password, KdfParams.fromJson(req.kdf.params)));
// Parameters of a room JS would create: Python parses them.
if (req.generate) out.generated = KdfParams.generate().toJson();
process.stdout.write(JSON.stringify(out));
