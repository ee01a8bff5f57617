//! Post-processing of the PTX that rustc's NVPTX backend emits, and the checks on it.
//!
//! Rust has no launch-bounds attribute and cannot declare a module-scope `.extern .shared`
//! array, so the build inserts both here (TOOLCHAIN.md: "Launch bounds", "Shared memory").
//! Everything is a pure function of the PTX text and the kernel table, so the output is
//! deterministic and the committed PTX can be checked for freshness.

use kernels_gpu::kernels::KernelInfo;

/// Name of the dynamic shared memory array the kernels address (`mov.u32 %r, nvfp4_dyn_smem;`).
pub const DYN_SMEM_SYMBOL: &str = "nvfp4_dyn_smem";

/// The module-scope declaration of [`DYN_SMEM_SYMBOL`]; 1024-aligned because TMA's 128-byte
/// swizzle needs 1024-byte aligned tiles.
pub const DYN_SMEM_DECL: &str = ".extern .shared .align 1024 .b8 nvfp4_dyn_smem[];";

/// Launch-bound directives a kernel must not already carry (we would contradict them).
const LAUNCH_BOUND_DIRECTIVES: &[&str] = &[".maxntid", ".reqntid", ".minnctapersm"];

/// Inserts each present kernel's launch bounds and, where needed, the dynamic shared memory
/// declaration. `sm90a` says which PTX this is: kernels marked `sm90a_only` must be in the
/// sm_90a PTX and must not be in the other one.
pub fn postprocess(ptx: &str, kernels: &[KernelInfo], sm90a: bool) -> Result<String, String> {
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut needs_dyn_smem = mentions_symbol(ptx, DYN_SMEM_SYMBOL);
    for kernel in kernels {
        let expected = sm90a || !kernel.sm90a_only;
        match find_entry(ptx, kernel.name)? {
            None if expected => {
                return Err(format!(
                    "kernel `{}` (listed in kernels-gpu's KERNELS) is not an .entry of the {} \
                     PTX: is it `#[unsafe(no_mangle)] pub unsafe extern \"ptx-kernel\" fn`, \
                     and not behind a cfg that excludes this target?",
                    kernel.name,
                    target_name(sm90a)
                ));
            }
            None => {}
            Some(_) if !expected => {
                return Err(format!(
                    "kernel `{}` is marked sm90a_only but is in the sm_80 PTX: gate it with \
                     #[cfg(nvfp4_sm90a)]",
                    kernel.name
                ));
            }
            Some(entry) => {
                let directives = launch_bounds(kernel)?;
                let between = &ptx[entry.params_end..entry.body_start];
                if let Some(found) = LAUNCH_BOUND_DIRECTIVES
                    .iter()
                    .find(|d| between.contains(*d))
                {
                    return Err(format!(
                        "kernel `{}` already has a {found} directive in the PTX; the build \
                         inserts launch bounds from KERNELS and will not contradict it",
                        kernel.name
                    ));
                }
                inserts.push((entry.params_end, directives));
                needs_dyn_smem |= kernel.dynamic_smem_bytes > 0;
            }
        }
    }
    if needs_dyn_smem && !declares_dyn_smem(ptx) {
        let line_end = address_size_line_end(ptx)?;
        inserts.push((line_end, format!("\n{DYN_SMEM_DECL}")));
    }
    inserts.sort_by_key(|(pos, _)| *pos);
    let mut out = String::with_capacity(ptx.len() + 256);
    let mut copied = 0;
    for (pos, text) in inserts {
        out.push_str(&ptx[copied..pos]);
        out.push_str(&text);
        copied = pos;
    }
    out.push_str(&ptx[copied..]);
    Ok(out)
}

/// The `.entry` names of a PTX module, in order.
pub fn entry_names(ptx: &str) -> Vec<String> {
    let code = strip_comments(ptx);
    let tokens = tokens(&code);
    tokens
        .windows(2)
        .filter(|w| w[0].1 == ".entry")
        .map(|w| w[1].1.to_string())
        .collect()
}

/// Fails if the PTX declares an external function or calls a function it does not define:
/// with `-Cpanic=immediate-abort` every panic is a `trap`, so a call out of the module means
/// something (a `core` routine, `vprintf`) that the driver cannot link.
pub fn check_self_contained(ptx: &str) -> Result<(), String> {
    let code = strip_comments(ptx);
    let tokens = tokens(&code);
    let mut defined: Vec<&str> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for (i, (_, token)) in tokens.iter().enumerate() {
        if *token != ".func" {
            continue;
        }
        let is_extern = i > 0 && tokens[i - 1].1 == ".extern";
        if let Some(name) = func_name(&code, &tokens, i) {
            if is_extern {
                problems.push(format!("declares `.extern .func {name}`"));
            } else {
                defined.push(name);
            }
        }
    }
    for (i, (_, token)) in tokens.iter().enumerate() {
        let is_call = *token == "call" || token.starts_with("call.");
        if !is_call {
            continue;
        }
        match call_target(&code, &tokens, i) {
            Some(target) if target.starts_with('%') => {} // indirect call through a register
            Some(target) if defined.contains(&target) => {}
            Some(target) => problems.push(format!("calls `{target}`, which it does not define")),
            None => problems.push(format!(
                "has a `{token}` whose target could not be read (near byte {})",
                tokens[i].0
            )),
        }
    }
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the PTX {}; the driver cannot link calls out of the module (are panics \
             reaching core's formatting, or is there a printf?)",
            problems.join(", ")
        ))
    }
}

fn target_name(sm90a: bool) -> &'static str {
    if sm90a { "sm_90a" } else { "sm_80" }
}

fn launch_bounds(kernel: &KernelInfo) -> Result<String, String> {
    if kernel.threads == 0 || kernel.threads > 1024 {
        return Err(format!(
            "kernel `{}` has threads = {} in KERNELS; a CTA has 1 to 1024 threads",
            kernel.name, kernel.threads
        ));
    }
    let mut text = format!("\n.maxntid {}, 1, 1", kernel.threads);
    if kernel.min_ctas_per_sm > 0 {
        text.push_str(&format!("\n.minnctapersm {}", kernel.min_ctas_per_sm));
    }
    Ok(text)
}

/// Byte offsets in the PTX of one `.entry`: just after its parameter list's `)` and at the
/// body's `{`.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    params_end: usize,
    body_start: usize,
}

/// Finds `.entry NAME(...)` followed by its body. Comments are blanked in a copy of the
/// same length, so offsets in it are offsets in `ptx`.
fn find_entry(ptx: &str, name: &str) -> Result<Option<Entry>, String> {
    let code = strip_comments(ptx);
    let tokens = tokens(&code);
    let mut found = None;
    for (i, w) in tokens.windows(2).enumerate() {
        if w[0].1 != ".entry" || w[1].1 != name {
            continue;
        }
        if found.is_some() {
            return Err(format!(
                "kernel `{name}` has more than one .entry in the PTX"
            ));
        }
        let after_name = tokens[i + 1].0 + name.len();
        let open = skip_space(&code, after_name);
        if code.as_bytes().get(open) != Some(&b'(') {
            return Err(format!(
                "`.entry {name}` is not followed by a parameter list"
            ));
        }
        let params_end = matching_paren(&code, open)
            .ok_or_else(|| format!("`.entry {name}`: unbalanced parameter list"))?
            + 1;
        let body_start = code[params_end..]
            .find(['{', ';'])
            .map(|off| params_end + off)
            .filter(|&pos| code.as_bytes()[pos] == b'{')
            .ok_or_else(|| format!("`.entry {name}` has no body"))?;
        found = Some(Entry {
            params_end,
            body_start,
        });
    }
    Ok(found)
}

fn declares_dyn_smem(ptx: &str) -> bool {
    let code = strip_comments(ptx);
    code.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with(".extern")
            && line.contains(".shared")
            && mentions_symbol(line, DYN_SMEM_SYMBOL)
    })
}

/// Whether `symbol` occurs as a whole identifier outside comments.
fn mentions_symbol(ptx: &str, symbol: &str) -> bool {
    let code = strip_comments(ptx);
    tokens(&code).iter().any(|(_, t)| *t == symbol)
}

fn address_size_line_end(ptx: &str) -> Result<usize, String> {
    let mut offset = 0;
    for line in ptx.split_inclusive('\n') {
        if line.trim_start().starts_with(".address_size") {
            return Ok(offset + line.trim_end_matches(['\n', '\r']).len());
        }
        offset += line.len();
    }
    Err("the PTX has no .address_size line to put the shared memory declaration after".into())
}

/// The name declared by the `.func` token at `i`: the identifier after the optional return
/// parameter list.
fn func_name<'a>(code: &'a str, tokens: &[(usize, &'a str)], i: usize) -> Option<&'a str> {
    let mut pos = skip_space(code, tokens[i].0 + tokens[i].1.len());
    // Linkage and attribute directives may follow `.func` (`.func .attribute(...)`); LLVM puts
    // only the return list there, but skip directives to be safe.
    loop {
        match code.as_bytes().get(pos)? {
            b'(' => pos = skip_space(code, matching_paren(code, pos)? + 1),
            b'.' => {
                pos = skip_space(code, pos + token_at(tokens, pos)?.len());
            }
            _ => break,
        }
    }
    token_at(tokens, pos)
}

/// The callee of the `call` token at `i`: `call[.uni] [(ret, ...),] target[, (args)]...`.
fn call_target<'a>(code: &'a str, tokens: &[(usize, &'a str)], i: usize) -> Option<&'a str> {
    let mut pos = skip_space(code, tokens[i].0 + tokens[i].1.len());
    if code.as_bytes().get(pos) == Some(&b'(') {
        pos = skip_space(code, matching_paren(code, pos)? + 1);
        if code.as_bytes().get(pos) != Some(&b',') {
            return None;
        }
        pos = skip_space(code, pos + 1);
    }
    token_at(tokens, pos)
}

/// The token starting at byte `pos`, if one does (`tokens` is sorted by offset).
fn token_at<'a>(tokens: &[(usize, &'a str)], pos: usize) -> Option<&'a str> {
    let index = tokens.binary_search_by_key(&pos, |(p, _)| *p).ok()?;
    Some(tokens[index].1)
}

fn skip_space(code: &str, mut pos: usize) -> usize {
    let bytes = code.as_bytes();
    while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
        pos += 1;
    }
    pos
}

fn matching_paren(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (off, byte) in code.as_bytes()[open..].iter().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + off);
                }
            }
            _ => {}
        }
    }
    None
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'$' | b'%' | b'.')
}

/// Identifier-like tokens (`.entry`, `call.uni`, `%r1`, `$L__BB0_1`, names) with their byte
/// offsets.
fn tokens(code: &str) -> Vec<(usize, &str)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if is_ident_byte(bytes[pos]) {
            let start = pos;
            while pos < bytes.len() && is_ident_byte(bytes[pos]) {
                pos += 1;
            }
            out.push((start, &code[start..pos]));
        } else {
            pos += 1;
        }
    }
    out
}

/// The PTX with `//` and `/* */` comments replaced by spaces (same length, newlines kept), so
/// byte offsets carry over.
fn strip_comments(ptx: &str) -> String {
    let bytes = ptx.as_bytes();
    let mut out = bytes.to_vec();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos..].starts_with(b"//") {
            while pos < bytes.len() && bytes[pos] != b'\n' {
                out[pos] = b' ';
                pos += 1;
            }
        } else if bytes[pos..].starts_with(b"/*") {
            let end = ptx[pos + 2..]
                .find("*/")
                .map_or(bytes.len(), |off| pos + 2 + off + 2);
            for byte in &mut out[pos..end] {
                if *byte != b'\n' {
                    *byte = b' ';
                }
            }
            pos = end;
        } else {
            pos += 1;
        }
    }
    // Only ASCII bytes were replaced (by ASCII spaces), whole comments at a time, so any
    // multi-byte character inside a comment is blanked entirely.
    String::from_utf8(out).expect("comments blanked whole")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "//\n// Generated by LLVM NVPTX Back-End\n//\n\n.version 8.0\n\
                          .target sm_90a\n.address_size 64\n\n";

    fn kernel(name: &'static str, threads: u32, min_ctas: u32) -> KernelInfo {
        KernelInfo {
            name,
            threads,
            min_ctas_per_sm: min_ctas,
            dynamic_smem_bytes: 0,
            min_cc: 80,
            sm90a_only: false,
            tile_n: 128,
            tile_m: 64,
            token_maps: false,
            weight_maps: false,
        }
    }

    fn module(body: &str) -> String {
        format!("{HEADER}{body}")
    }

    const MMA_ENTRY: &str = "\t// .globl\tk_mma\n\n.visible .entry k_mma(\n\
                             \t.param .u64 .ptr .align 1 k_mma_param_0,\n\
                             \t.param .u32 k_mma_param_1\n)\n{\n\n\n\tret;\n\n}\n";

    #[test]
    fn inserts_launch_bounds_between_params_and_body() {
        let ptx = module(MMA_ENTRY);
        let out = postprocess(&ptx, &[kernel("k_mma", 128, 2)], false).unwrap();
        let expected = module(
            "\t// .globl\tk_mma\n\n.visible .entry k_mma(\n\
             \t.param .u64 .ptr .align 1 k_mma_param_0,\n\
             \t.param .u32 k_mma_param_1\n)\n.maxntid 128, 1, 1\n.minnctapersm 2\n{\n\n\n\tret;\n\n}\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn handles_empty_parameter_list_and_several_kernels() {
        let ptx = module(
            ".visible .entry a()\n{\n\tret;\n}\n\n.visible .entry b(\n\t.param .u32 b_param_0\n)\n{\n\tret;\n}\n",
        );
        let kernels = [kernel("b", 384, 1), kernel("a", 64, 0)];
        let out = postprocess(&ptx, &kernels, true).unwrap();
        let expected = module(
            ".visible .entry a()\n.maxntid 64, 1, 1\n{\n\tret;\n}\n\n.visible .entry b(\n\
             \t.param .u32 b_param_0\n)\n.maxntid 384, 1, 1\n.minnctapersm 1\n{\n\tret;\n}\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn matches_whole_names_only() {
        let ptx = module(".visible .entry k_mma_v2()\n{\n\tret;\n}\n");
        let err = postprocess(&ptx, &[kernel("k_mma", 128, 1)], true).unwrap_err();
        assert!(
            err.contains("`k_mma`") && err.contains("not an .entry"),
            "{err}"
        );
        // A name in a comment is not an entry.
        let ptx = module("// .entry k_mma()\n.visible .entry other()\n{\n\tret;\n}\n");
        assert!(postprocess(&ptx, &[kernel("k_mma", 128, 1)], true).is_err());
    }

    #[test]
    fn sm90a_only_kernels_belong_to_the_sm90a_ptx() {
        let mut wgmma = kernel("k_wgmma", 384, 1);
        wgmma.sm90a_only = true;
        let kernels = [kernel("k_mma", 128, 2), wgmma];
        // Absent from the sm_80 PTX: fine.
        let ptx = module(MMA_ENTRY);
        assert!(postprocess(&ptx, &kernels, false).is_ok());
        // Absent from the sm_90a PTX: an error.
        let err = postprocess(&ptx, &kernels, true).unwrap_err();
        assert!(err.contains("k_wgmma") && err.contains("sm_90a"), "{err}");
        // Present in the sm_80 PTX: an error.
        let ptx = module(&format!(
            "{MMA_ENTRY}.visible .entry k_wgmma()\n{{\n\tret;\n}}\n"
        ));
        let err = postprocess(&ptx, &kernels, false).unwrap_err();
        assert!(err.contains("sm90a_only"), "{err}");
        assert!(postprocess(&ptx, &kernels, true).is_ok());
    }

    #[test]
    fn refuses_existing_launch_bounds_and_duplicate_entries() {
        let ptx = module(".visible .entry a()\n.maxntid 32, 1, 1\n{\n\tret;\n}\n");
        let err = postprocess(&ptx, &[kernel("a", 64, 1)], true).unwrap_err();
        assert!(err.contains(".maxntid"), "{err}");
        let ptx = module(".visible .entry a()\n{\n\tret;\n}\n.visible .entry a()\n{\n\tret;\n}\n");
        assert!(postprocess(&ptx, &[kernel("a", 64, 1)], true).is_err());
        let ptx = module(".visible .entry a()\n{\n\tret;\n}\n");
        assert!(postprocess(&ptx, &[kernel("a", 0, 1)], true).is_err());
    }

    #[test]
    fn declares_dynamic_shared_memory_when_referenced() {
        let body = ".visible .entry a()\n{\n\t.reg .b32 %r<2>;\n\t// begin inline asm\n\
                    \tmov.u32 %r1, nvfp4_dyn_smem;\n\t// end inline asm\n\tret;\n}\n";
        let out = postprocess(&module(body), &[kernel("a", 128, 1)], true).unwrap();
        let expected = HEADER.replace(
            ".address_size 64\n",
            ".address_size 64\n.extern .shared .align 1024 .b8 nvfp4_dyn_smem[];\n",
        ) + &body.replace("a()\n{", "a()\n.maxntid 128, 1, 1\n.minnctapersm 1\n{");
        assert_eq!(out, expected);
        // Idempotent declaration: an existing one is kept, not doubled.
        let twice = postprocess(
            &expected.replace(".maxntid 128, 1, 1\n.minnctapersm 1\n", ""),
            &[kernel("a", 128, 1)],
            true,
        )
        .unwrap();
        assert_eq!(twice, expected);
    }

    #[test]
    fn declares_dynamic_shared_memory_for_kernels_that_request_it() {
        let mut big = kernel("a", 128, 1);
        big.dynamic_smem_bytes = 200 * 1024;
        let ptx = module(".visible .entry a()\n{\n\tret;\n}\n");
        let out = postprocess(&ptx, &[big], true).unwrap();
        assert!(
            out.contains(".address_size 64\n.extern .shared .align 1024 .b8 nvfp4_dyn_smem[];\n\n")
        );
        // Not for a mention in a comment only, and not when nothing asks for it.
        let ptx = module("// nvfp4_dyn_smem\n.visible .entry a()\n{\n\tret;\n}\n");
        let out = postprocess(&ptx, &[kernel("a", 128, 1)], true).unwrap();
        assert!(!out.contains(".extern"));
    }

    #[test]
    fn lists_entries() {
        let ptx = module(&format!(
            "{MMA_ENTRY}// .entry nope()\n.visible .entry b()\n{{\n}}\n"
        ));
        assert_eq!(entry_names(&ptx), ["k_mma", "b"]);
    }

    #[test]
    fn accepts_calls_to_defined_functions() {
        let ptx = module(
            ".func  (.param .b32 func_retval0) helper(\n\t.param .b32 helper_param_0\n)\n{\n\tret;\n}\n\
             .visible .entry a()\n{\n\t{ // callseq 0, 0\n\t.param .b32 param0;\n\
             \t.param .b32 retval0;\n\tcall.uni (retval0), helper, (param0);\n\t} // callseq 0\n\
             \tcall.uni \n\thelper, \n\t(\n\tparam0\n\t);\n\ttrap;\n\tret;\n}\n",
        );
        check_self_contained(&ptx).unwrap();
    }

    #[test]
    fn rejects_extern_functions_and_undefined_calls() {
        let ptx = module(
            ".extern .func  (.param .b32 func_retval0) vprintf\n(\n\t.param .b64 vprintf_param_0,\n\
             \t.param .b64 vprintf_param_1\n)\n;\n.visible .entry a()\n{\n\
             \tcall.uni (retval0), vprintf, (param0, param1);\n\tret;\n}\n",
        );
        let err = check_self_contained(&ptx).unwrap_err();
        assert!(err.contains(".extern .func vprintf"), "{err}");
        assert!(err.contains("calls `vprintf`"), "{err}");
        let ptx =
            module(".visible .entry a()\n{\n\tcall _ZN4core9panicking5panic17h0E, (param0);\n}\n");
        let err = check_self_contained(&ptx).unwrap_err();
        assert!(err.contains("_ZN4core9panicking5panic17h0E"), "{err}");
        // Mentions in comments are not calls.
        check_self_contained(&module("// call foo;\n.visible .entry a()\n{\n\tret;\n}\n")).unwrap();
    }
}
