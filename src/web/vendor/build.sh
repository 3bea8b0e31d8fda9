#!/bin/sh
# Rebuilds the vendored JavaScript from the versions pinned in package-lock.json.
# Run by hand after changing package.json; the outputs are committed, so neither
# CI nor a build needs Node. Requires Node.js 20+ and npm.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
# The NATS client ships CommonJS; bundle what the page imports into one ES module.
npx esbuild entry-nats.js --bundle --format=esm --minify --legal-comments=eof --target=es2022 --outfile=nats.js
# qrcode-generator and uPlot ship ES modules; copied as built.
cp node_modules/qrcode-generator/dist/qrcode.mjs qrcode.js
cp node_modules/uplot/dist/uPlot.esm.js uplot.js
cp node_modules/uplot/dist/uPlot.min.css uplot.css
# Licences of everything bundled.
cp node_modules/@nats-io/nats-core/LICENSE LICENSE.nats-core
cp node_modules/@nats-io/nkeys/LICENSE LICENSE.nkeys
cp node_modules/@nats-io/nuid/LICENSE LICENSE.nuid
cp node_modules/uplot/LICENSE LICENSE.uplot
# qrcode-generator ships its MIT notice in the source header only.
sed -n "1,16p" qrcode.js > LICENSE.qrcode-generator
sha256sum nats.js qrcode.js uplot.js uplot.css > SHA256SUMS
