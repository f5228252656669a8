/**
 * A credential-bearing value (a SAS URL, a bearer token) that must never reach a log, an error
 * message, the lineage or an HTTP answer. It prints as `[secret]` in every string and JSON
 * context; only `reveal()` gives the value, and only code that hands it to the service calls it.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return "[secret]";
  }

  toJSON(): string {
    return "[secret]";
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "[secret]";
  }
}

/** A URL without its query string: what may be shown of a SAS URL. */
export function withoutQuery(url: string): string {
  const at = url.indexOf("?");
  return at < 0 ? url : url.slice(0, at);
}
