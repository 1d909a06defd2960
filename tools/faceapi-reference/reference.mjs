// Computes reference face descriptors with face-api's own FaceRecognitionNet on the pure-JS
// tfjs "cpu" backend (no native code), for the inputs written by
//   cargo run -p facesim-server --example descriptor_inputs -- <inputs-dir>
// Each input is a raw 150x150x3 RGB file; the output JSON maps input names to 128 floats.
//
// Usage: node reference.mjs <inputs-dir> <models-dir> <out.json>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadNet } from './weights.mjs';

// face-api's CommonJS Node build that loads the pure-JS @tensorflow/tfjs (not tfjs-node), whose
// CPU backend is plain JavaScript. Its wasm backend is used only by the benchmark script.
const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const [inputsDir, modelsDir, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node reference.mjs <inputs-dir> <models-dir> <out.json>');
  process.exit(2);
}

const { tf } = faceapi;
await tf.setBackend('cpu');
await tf.ready();

loadNet(tf, faceapi.nets.faceRecognitionNet, modelsDir, 'face_recognition_model');

const names = JSON.parse(fs.readFileSync(path.join(inputsDir, 'index.json'), 'utf8'));
const out = { backend: tf.getBackend(), tfjs: tf.version.tfjs, faceapi: faceapi.version, descriptors: {} };
for (const name of names) {
  const rgb = fs.readFileSync(path.join(inputsDir, `${name}.rgb`));
  if (rgb.length !== 150 * 150 * 3) throw new Error(`${name}: expected 67500 bytes, got ${rgb.length}`);
  const input = tf.tensor4d(Float32Array.from(rgb), [1, 150, 150, 3]);
  const descriptor = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(input);
  input.dispose();
  out.descriptors[name] = Array.from(descriptor);
  console.log(`${name}: ${descriptor.length} values`);
}
fs.writeFileSync(outPath, `${JSON.stringify(out, null, 1)}\n`);
console.log(`wrote ${names.length} descriptors (${out.backend} backend, tfjs ${out.tfjs}) to ${outPath}`);
