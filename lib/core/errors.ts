/**
 * The error kinds every layer speaks, with structured fields instead of wording: a problem names
 * the *field* it is about (`source`, `retention.keepLast`, `point`, …) and may refer to other
 * fields as `{{name}}`; each adapter words them in its own terms (the CLI as `--source`, the HTTP
 * API as the body field `"source"`), so no message is written for one interface and rewritten for
 * another. Kinds decide the answer: input and not-found are the caller's to fix (exit code 2,
 * HTTP 400/404), busy is "try later" (exit 3, HTTP 409), conflict is a lost race (HTTP 409),
 * integrity means data did not match what it must be (exit 1), anything else is a failure (exit 1).
 */

export type ErrorKind = "input" | "notFound" | "busy" | "conflict" | "integrity";

/** One thing wrong with the input: which field (if one) and what, with `{{field}}` references. */
export interface Problem {
  field?: string;
  message: string;
}

/** How an adapter spells a field: `--keep-last` for the CLI, `"retention.keepLast"` for HTTP. */
export type FieldWords = (field: string) => string;

/** The plain spelling: the field's own name, as the HTTP API and the lineage use it. */
export const plainWords: FieldWords = (field) => field;

export function renderProblem(problem: Problem, words: FieldWords = plainWords): string {
  const body = problem.message.replace(/\{\{([A-Za-z][\w.]*)\}\}/g, (_, name: string) => words(name));
  return problem.field ? `${words(problem.field)}: ${body}` : body;
}

export function renderProblems(problems: Problem[], words: FieldWords = plainWords): string {
  if (problems.length === 1) return renderProblem(problems[0], words);
  return `${problems.length} problems:\n${problems.map((p) => `  - ${renderProblem(p, words)}`).join("\n")}`;
}

/**
 * Base of the kinds above. `message` is the plain rendering (fields by their own names); the
 * template keeps the `{{field}}` references for `render` in an adapter's words.
 */
export abstract class KindError extends Error {
  abstract readonly kind: ErrorKind;
  protected readonly template: string;

  constructor(template: string) {
    super(renderProblem({ message: template }));
    this.template = template;
  }

  /** The message in an adapter's words. */
  render(words: FieldWords = plainWords): string {
    return renderProblem({ message: this.template }, words);
  }
}

/** Bad input: every problem found, all at once, before anything was written. */
export class InputError extends KindError {
  readonly kind = "input" as const;
  readonly problems: Problem[];

  constructor(problems: Array<Problem | string>) {
    const list = problems.map((p) => (typeof p === "string" ? { message: p } : p));
    super(renderProblems(list));
    this.problems = list;
    this.name = "InputError";
  }

  static field(field: string, message: string): InputError {
    return new InputError([{ field, message }]);
  }

  override render(words: FieldWords = plainWords): string {
    return renderProblems(this.problems, words);
  }
}

/** A well-formed name that names nothing (a disk, run or point that does not exist). */
export class NotFoundError extends KindError {
  readonly kind = "notFound" as const;

  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "NotFoundError";
  }

  override render(words: FieldWords = plainWords): string {
    return renderProblem({ field: this.field, message: this.template }, words);
  }
}

/** Another writer changed the row since it was read (ETag mismatch), or a name is taken. */
export class ConflictError extends KindError {
  readonly kind = "conflict" as const;

  constructor(message: string) {
    super(message);
    this.name = "ConflictError";
  }
}

/**
 * A disk already has a live run. `holder` says who, in words (this host's timer, a queue worker,
 * a CLI process with its pid); `until` when its hold lapses unless renewed.
 */
export class BusyError extends KindError {
  readonly kind = "busy" as const;

  constructor(
    readonly diskId: string,
    readonly activeRunId: string,
    readonly holder: string,
    readonly until: string,
  ) {
    super(
      `disk ${diskId} is busy: run ${activeRunId} is active, held by ${holder} until ${until} unless renewed`,
    );
    this.name = "BusyError";
  }
}

/** Bytes that did not match what they must be (a digest, an MD5); `where` names the range. */
export class IntegrityError extends KindError {
  readonly kind = "integrity" as const;

  constructor(
    message: string,
    readonly where?: { start: number; end: number },
  ) {
    super(message);
    this.name = "IntegrityError";
  }
}

export function kindOf(err: unknown): ErrorKind | undefined {
  return err instanceof KindError ? err.kind : (err as { kind?: ErrorKind } | undefined)?.kind;
}

/** Exit codes: 0 success, 1 the work failed, 2 bad input or configuration, 3 busy. */
export function exitCodeOf(err: unknown): number {
  switch (kindOf(err)) {
    case "input":
    case "notFound":
      return 2;
    case "busy":
      return 3;
    default:
      return 1;
  }
}

/** The first line of any error's message, never its stack. */
export function messageOf(err: unknown): string {
  const m = (err as { message?: unknown } | undefined)?.message;
  return String(typeof m === "string" ? m : err).split("\n")[0];
}
