// Oracle for the SemVer and Go schemes (tests/version_oracles.rs), with npm's semver package
// from $ORACLE_NODE_MODULES. Reads lines "V <hex>" and "C <hex a> <hex b>" (versions as hex of
// their UTF-8 bytes) on stdin and prints one answer per line: ok|err, or lt|eq|gt|err, as
// `new semver.SemVer(v)` and `semver.compare(a, b)` (strict, not loose) decide.
'use strict'
const path = require('path')
const semver = require(path.join(process.env.ORACLE_NODE_MODULES, 'semver'))

const decode = (hex) => Buffer.from(hex, 'hex').toString('utf8')
const valid = (text) => {
  try {
    new semver.SemVer(text)
    return true
  } catch {
    return false
  }
}

const answers = []
for (const line of require('fs').readFileSync(0, 'utf8').split('\n')) {
  const [op, a, b] = line.split(' ')
  if (op === 'V') {
    answers.push(valid(decode(a)) ? 'ok' : 'err')
  } else if (op === 'C') {
    const [x, y] = [decode(a), decode(b)]
    if (!valid(x) || !valid(y)) {
      answers.push('err')
    } else {
      const order = semver.compare(x, y)
      answers.push(order < 0 ? 'lt' : order > 0 ? 'gt' : 'eq')
    }
  }
}
process.stdout.write(answers.map((answer) => answer + '\n').join(''))
