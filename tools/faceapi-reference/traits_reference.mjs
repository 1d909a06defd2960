// Runs face-api's own AgeGenderNet on raw RGB inputs written by
//   cargo run --example faces_inputs -- reference <inputs-dir>
// on the pure-JS tfjs "cpu" backend: each whole picture is the face input (face-api pads it to a
// centred square and resizes it to 112x112). Writes { backend, tfjs, faceapi, images: { name:
// { age, male_probability } } }.
//
// Usage: node traits_reference.mjs <inputs-dir> <models-dir> <out.json>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadNet } from './weights.mjs';

const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const [inputsDir, modelsDir, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node traits_reference.mjs <inputs-dir> <models-dir> <out.json>');
  process.exit(2);
}
const { tf } = faceapi;
await tf.setBackend('cpu');
await tf.ready();
loadNet(tf, faceapi.nets.ageGenderNet, modelsDir, 'age_gender_model');

const index = JSON.parse(fs.readFileSync(path.join(inputsDir, 'index.json'), 'utf8'));
const out = { backend: tf.getBackend(), tfjs: tf.version.tfjs, faceapi: faceapi.version, images: {} };
for (const { name, width, height } of index) {
  const rgb = fs.readFileSync(path.join(inputsDir, `${name}.rgb`));
  if (rgb.length !== width * height * 3) throw new Error(`${name}: expected ${width * height * 3} bytes, got ${rgb.length}`);
  const input = tf.tensor3d(Int32Array.from(rgb), [height, width, 3], 'int32');
  const { age, gender, genderProbability } = await faceapi.nets.ageGenderNet.predictAgeAndGender(input);
  input.dispose();
  const male = gender === 'male' ? genderProbability : 1 - genderProbability;
  out.images[name] = { age, male_probability: male };
}
fs.writeFileSync(outPath, `${JSON.stringify(out)}\n`);
console.log(`age and gender of ${index.length} images (${out.backend} backend, tfjs ${out.tfjs}); wrote ${outPath}`);
