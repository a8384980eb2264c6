;; wasm-xyz-format: a MusicFS format plugin for MFSX files, as a WASM guest.
;;
;; Guest ABI 1 (docs/plugins-wasm.md): exports memory, alloc, manifest, parse.
;; MFSX layout (README.md): "MFSX", u8 version = 1, u8 entry count, then per
;; entry: u8 type ('s' text or 'i' u32), u8 key length, key bytes ([a-z_]),
;; and for 's' a u16 LE length + UTF-8 bytes, for 'i' a u32 LE; then the payload.
;; parse() walks the entries and writes them out as a JSON object.
(module
  ;; Page 0 holds the constants below; page 1 on is the heap: the input the
  ;; host writes (alloc) followed by the JSON result parse builds.
  (memory (export "memory") 2)

  (global $HEAP i32 (i32.const 65536))
  (global $out (mut i32) (i32.const 0))      ;; next byte of the result
  (global $oom (mut i32) (i32.const 0))      ;; 1 once memory.grow failed

  ;; NUL-terminated constants (see $const).
  (data (i32.const 16)
    "{\"name\":\"wasm-xyz-format\",\"version\":\"1.0.0\",\"api_version\":\"1.0\",\"kinds\":[\"format\"],\"extensions\":[\"mfsx\"]}\00")
  (data (i32.const 512) "{\"error\":\"not an MFSX file (no MFSX magic)\"}\00")
  (data (i32.const 576) "{\"error\":\"unsupported MFSX version\"}\00")
  (data (i32.const 640) "{\"error\":\"truncated MFSX tag block\"}\00")
  (data (i32.const 704) "{\"error\":\"bad MFSX tag key\"}\00")
  (data (i32.const 768) "{\"error\":\"bad MFSX entry type\"}\00")
  (data (i32.const 832) "{\"error\":\"out of memory\"}\00")
  (data (i32.const 896) "0123456789abcdef")
  ;; 928..940: scratch for the digits of an integer

  ;; ptr << 32 | len
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len))))

  ;; A NUL-terminated constant as a result.
  (func $const (param $ptr i32) (result i64)
    (local $end i32)
    (local.set $end (local.get $ptr))
    (block $done
      (loop $scan
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $scan)))
    (call $pack (local.get $ptr) (i32.sub (local.get $end) (local.get $ptr))))

  ;; Make [start, start+len) addressable, growing memory; 0 if it cannot.
  (func $reserve (param $start i32) (param $len i32) (result i32)
    (local $pages i64)
    (local.set $pages
      (i64.shr_u
        (i64.add (i64.add (i64.extend_i32_u (local.get $start))
                          (i64.extend_i32_u (local.get $len)))
                 (i64.const 65535))
        (i64.const 16)))
    (if (i64.gt_u (local.get $pages) (i64.const 65536)) (then (return (i32.const 0))))
    (if (i64.gt_u (local.get $pages) (i64.extend_i32_u (memory.size)))
      (then
        (if (i32.eq (memory.grow (i32.sub (i32.wrap_i64 (local.get $pages)) (memory.size)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1))

  ;; The input buffer of the next call: always at the heap base (the host is
  ;; done with the previous input and result by then).
  (func (export "alloc") (param $len i32) (result i32)
    (if (i32.eqz (call $reserve (global.get $HEAP) (local.get $len)))
      (then (return (i32.const 0))))
    (global.get $HEAP))

  (func (export "manifest") (result i64)
    (call $const (i32.const 16)))

  ;; Append one byte to the result (sets $oom instead when memory is full).
  (func $put (param $b i32)
    (if (global.get $oom) (then (return)))
    (if (i32.eqz (call $reserve (global.get $out) (i32.const 1)))
      (then (global.set $oom (i32.const 1)) (return)))
    (i32.store8 (global.get $out) (local.get $b))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))

  ;; Append an unsigned integer in decimal.
  (func $put_u32 (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 940))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (loop $copy
      (call $put (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $copy (i32.lt_u (local.get $p) (i32.const 940)))))

  ;; Append bytes [p, p+n) as the inside of a JSON string.
  (func $put_text (param $p i32) (param $n i32)
    (local $end i32) (local $b i32)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.or (i32.eq (local.get $b) (i32.const 34))      ;; "
                    (i32.eq (local.get $b) (i32.const 92)))     ;; \
          (then (call $put (i32.const 92)) (call $put (local.get $b)))
          (else
            (if (i32.lt_u (local.get $b) (i32.const 32))        ;; control: \u00XX
              (then
                (call $put (i32.const 92)) (call $put (i32.const 117))
                (call $put (i32.const 48)) (call $put (i32.const 48))
                (call $put (i32.load8_u (i32.add (i32.const 896)
                                                 (i32.shr_u (local.get $b) (i32.const 4)))))
                (call $put (i32.load8_u (i32.add (i32.const 896)
                                                 (i32.and (local.get $b) (i32.const 15))))))
              (else (call $put (local.get $b))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $byte))))

  (func (export "parse") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $end i32) (local $count i32) (local $i i32)
    (local $type i32) (local $klen i32) (local $vlen i32) (local $k i32) (local $c i32)
    (local $start i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; the result goes after the input, 8-aligned
    (local.set $start (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (global.set $out (local.get $start))
    (global.set $oom (i32.const 0))

    (if (i32.lt_u (local.get $len) (i32.const 6))
      (then (return (call $const (i32.const 512)))))
    (if (i32.ne (i32.load (local.get $p)) (i32.const 0x5853464d))   ;; "MFSX"
      (then (return (call $const (i32.const 512)))))
    (if (i32.ne (i32.load8_u offset=4 (local.get $p)) (i32.const 1))
      (then (return (call $const (i32.const 576)))))
    (local.set $count (i32.load8_u offset=5 (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 6)))

    (call $put (i32.const 123))                                     ;; {
    (block $entries_done
      (loop $entry
        (br_if $entries_done (i32.ge_u (local.get $i) (local.get $count)))
        (if (i32.gt_u (i32.add (local.get $p) (i32.const 2)) (local.get $end))
          (then (return (call $const (i32.const 640)))))
        (local.set $type (i32.load8_u (local.get $p)))
        (local.set $klen (i32.load8_u offset=1 (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (if (i32.or (i32.eqz (local.get $klen)) (i32.gt_u (local.get $klen) (i32.const 32)))
          (then (return (call $const (i32.const 704)))))
        (if (i32.gt_u (i32.add (local.get $p) (local.get $klen)) (local.get $end))
          (then (return (call $const (i32.const 640)))))
        (if (local.get $i) (then (call $put (i32.const 44))))         ;; ,
        (call $put (i32.const 34))
        ;; the key: [a-z_] only, so it needs no escaping
        (local.set $k (i32.const 0))
        (loop $key
          (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $k))))
          (if (i32.eqz (i32.or (i32.eq (local.get $c) (i32.const 95))
                               (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))))
            (then (return (call $const (i32.const 704)))))
          (call $put (local.get $c))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $key (i32.lt_u (local.get $k) (local.get $klen))))
        (call $put (i32.const 34))
        (call $put (i32.const 58))                                    ;; :
        (local.set $p (i32.add (local.get $p) (local.get $klen)))

        (if (i32.eq (local.get $type) (i32.const 115))                ;; 's'
          (then
            (if (i32.gt_u (i32.add (local.get $p) (i32.const 2)) (local.get $end))
              (then (return (call $const (i32.const 640)))))
            (local.set $vlen (i32.load16_u (local.get $p)))
            (local.set $p (i32.add (local.get $p) (i32.const 2)))
            (if (i32.gt_u (i32.add (local.get $p) (local.get $vlen)) (local.get $end))
              (then (return (call $const (i32.const 640)))))
            (call $put (i32.const 34))
            (call $put_text (local.get $p) (local.get $vlen))
            (call $put (i32.const 34))
            (local.set $p (i32.add (local.get $p) (local.get $vlen))))
          (else
            (if (i32.ne (local.get $type) (i32.const 105))            ;; 'i'
              (then (return (call $const (i32.const 768)))))
            (if (i32.gt_u (i32.add (local.get $p) (i32.const 4)) (local.get $end))
              (then (return (call $const (i32.const 640)))))
            (call $put_u32 (i32.load (local.get $p)))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $entry)))
    (call $put (i32.const 125))                                     ;; }
    (if (global.get $oom) (then (return (call $const (i32.const 832)))))
    (call $pack (local.get $start) (i32.sub (global.get $out) (local.get $start))))
)
