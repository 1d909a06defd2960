// Loads one of face-api's networks from its weight files in a models folder (the files facesim
// bundles in models/face-api): `<name>-weights_manifest.json` and `<name>.bin`.
import fs from 'node:fs';
import path from 'node:path';

export function loadNet(tf, net, modelsDir, name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(modelsDir, `${name}-weights_manifest.json`), 'utf8'));
  const bin = fs.readFileSync(path.join(modelsDir, `${name}.bin`));
  const buffer = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
  net.loadFromWeightMap(tf.io.decodeWeights(buffer, manifest.flatMap((group) => group.weights)));
}
