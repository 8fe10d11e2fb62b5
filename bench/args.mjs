// `--key value` options for the bench scripts: `defaults` names every option there is.

export function parseArgs(defaults, argv = process.argv.slice(2)) {
  const args = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in args) || i + 1 >= argv.length) {
      console.error(`bad option ${argv[i]}; options: ${Object.keys(args).map((a) => `--${a} VALUE`).join(' ')}`);
      process.exit(2);
    }
    args[k] = argv[i + 1];
  }
  return args;
}
