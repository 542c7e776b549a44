// Uploads a file with tus-js-client (the browser and Node.js reference client), the way a
// web page would: in pieces, stopped after the first piece, then resumed from the URL alone.
//   node tus_upload.mjs ENDPOINT KEY FILE CHUNK
// Prints one JSON line: {"url": ..., "resumedFrom": <offset the resumed upload started at>}.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const require = createRequire(process.env.TUS_JS_MODULES + "/");
const tus = require("tus-js-client");
const [endpoint, key, file, chunk] = process.argv.slice(2);
const data = fs.readFileSync(file);
const common = {
  headers: { Authorization: `Bearer ${key}` },
  chunkSize: Number(chunk),
  retryDelays: [0, 200, 500],
  metadata: { filename: path.basename(file), filetype: "video/mp4" },
};

function firstPiece() {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...common, endpoint,
      onError: reject,
      onChunkComplete: () => { upload.abort().then(() => resolve(upload.url)); },
      onSuccess: () => resolve(upload.url),
    });
    upload.start();
  });
}

function resume(url) {
  return new Promise((resolve, reject) => {
    let from = null;
    const upload = new tus.Upload(data, {
      ...common, uploadUrl: url,
      onError: reject,
      onChunkComplete: (size, accepted) => { if (from === null) from = accepted - size; },
      onSuccess: () => resolve(from),
    });
    upload.start();
  });
}

const url = await firstPiece();
const resumedFrom = await resume(url);
console.log(JSON.stringify({ url, resumedFrom }));
