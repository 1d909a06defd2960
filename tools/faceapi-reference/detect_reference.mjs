// Runs face-api's own face detection and 68-point landmarks on raw RGB inputs written by
//   cargo run --example faces_inputs -- reference <inputs-dir>
// on the pure-JS tfjs "cpu" backend, and writes boxes, scores and landmarks (original image
// pixels) as JSON: { backend, tfjs, faceapi, detector, images: { name: [{box, score, landmarks}] } }.
//
// Usage: node detect_reference.mjs <inputs-dir> <models-dir> <out.json> [tiny|ssd] [cpu|wasm]
// (the exactness reference is tiny on cpu; wasm, face-api's fast backend, is for comparing the
// detectors' coverage and speed on many images)
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadNet } from './weights.mjs';

const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const [inputsDir, modelsDir, outPath, detector = 'tiny', backend = 'cpu'] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node detect_reference.mjs <inputs-dir> <models-dir> <out.json> [tiny|ssd]');
  process.exit(2);
}
const { tf } = faceapi;
if (backend === 'wasm') {
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(`${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
}
await tf.setBackend(backend);
await tf.ready();

const load = (net, name) => loadNet(tf, net, modelsDir, name);
const options = detector === 'ssd'
  ? (load(faceapi.nets.ssdMobilenetv1, 'ssd_mobilenetv1_model'), new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5 }))
  : (load(faceapi.nets.tinyFaceDetector, 'tiny_face_detector_model'), new faceapi.TinyFaceDetectorOptions({ inputSize: 416, scoreThreshold: 0.5 }));
load(faceapi.nets.faceLandmark68Net, 'face_landmark_68_model');

const index = JSON.parse(fs.readFileSync(path.join(inputsDir, 'index.json'), 'utf8'));
const out = { backend: tf.getBackend(), tfjs: tf.version.tfjs, faceapi: faceapi.version, detector, images: {} };
let millis = 0;
for (const { name, width, height } of index) {
  const rgb = fs.readFileSync(path.join(inputsDir, `${name}.rgb`));
  if (rgb.length !== width * height * 3) throw new Error(`${name}: expected ${width * height * 3} bytes, got ${rgb.length}`);
  const input = tf.tensor3d(Int32Array.from(rgb), [height, width, 3], 'int32');
  const started = performance.now();
  const results = await faceapi.detectAllFaces(input, options).withFaceLandmarks();
  millis += performance.now() - started;
  input.dispose();
  out.images[name] = results.map((r) => ({
    box: [r.detection.box.x, r.detection.box.y, r.detection.box.width, r.detection.box.height],
    score: r.detection.score,
    landmarks: r.landmarks.positions.map((p) => [p.x, p.y]),
  }));
}
fs.writeFileSync(outPath, `${JSON.stringify(out)}\n`);
const found = Object.values(out.images).filter((faces) => faces.length > 0).length;
console.log(`${detector}: faces in ${found}/${index.length} images, ${(millis / index.length).toFixed(1)} ms per image `
  + `(detect + landmarks, ${out.backend} backend, tfjs ${out.tfjs}); wrote ${outPath}`);
