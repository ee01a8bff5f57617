//! Device buffers as a problem refers to them: an address, a length in bytes, and a borrow
//! of the cudarc buffer that keeps it alive and lets the launch keep cudarc's stream
//! bookkeeping right.
//!
//! cudarc 0.19 tracks, for each `CudaSlice`, a *read* and a *write* event (when the context
//! runs several streams and event tracking is on). A kernel that reads a buffer must first
//! make its stream wait for the last write and afterwards record the read event; a kernel
//! that writes must wait for the last reads and writes and afterwards record the write
//! event. `DevicePtr::device_ptr` / `DevicePtrMut::device_ptr_mut` do exactly that (the wait
//! at once, the record when the returned `SyncOnDrop` drops), and [`crate::GroupedGemm::launch`]
//! calls them for every buffer of the group around its one kernel launch.

use crate::validate::Span;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut,
    DeviceSlice, SyncOnDrop,
};
use half::{bf16, f16};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The device address of a cudarc buffer, read on the buffer's own stream (cudarc hands
/// addresses out only together with its read bookkeeping; on its own stream that is a no-op
/// in effect: the stream waits for its own last write and records a read at its present end).
fn address_of<T, S: DevicePtr<T>>(buffer: &S) -> u64 {
    let (ptr, _record) = buffer.device_ptr(buffer.stream());
    ptr
}

enum InputSource<'a> {
    Slice(&'a CudaSlice<u8>),
    View(CudaView<'a, u8>),
    Words(&'a CudaSlice<u32>),
    WordsView(CudaView<'a, u32>),
    Half(&'a CudaSlice<f16>),
    Bf16(&'a CudaSlice<bf16>),
    Raw,
}

/// A read-only device buffer (A, B or a scale buffer): address, length in bytes, and a
/// borrow of the cudarc buffer it came from.
///
/// Build it from `&CudaSlice<u8>` or `CudaView<u8>` (safe: the borrow keeps the memory alive
/// and unmodified by safe code while the problem lives), or from a raw address with
/// [`DeviceInput::from_raw`] (memory owned elsewhere: PyTorch, a custom allocator).
pub struct DeviceInput<'a> {
    span: Span,
    source: InputSource<'a>,
}

impl<'a> DeviceInput<'a> {
    /// The whole of `slice` (`slice.len()` bytes).
    pub fn from_slice(slice: &'a CudaSlice<u8>) -> Self {
        Self {
            span: Span::new(address_of(slice), slice.len()),
            source: InputSource::Slice(slice),
        }
    }

    /// The bytes of `view` (e.g. `slice.slice(off..off + len)`).
    pub fn from_view(view: CudaView<'a, u8>) -> Self {
        let span = Span::new(address_of(&view), view.len());
        Self {
            span,
            source: InputSource::View(view),
        }
    }

    /// The whole of an fp16 buffer: 16-bit activations ([`crate::Activation::F16`]).
    pub fn from_f16(slice: &'a CudaSlice<f16>) -> Self {
        Self {
            span: Span::new(address_of(slice), slice.num_bytes()),
            source: InputSource::Half(slice),
        }
    }

    /// The whole of a bf16 buffer: 16-bit activations ([`crate::Activation::Bf16`]).
    pub fn from_bf16(slice: &'a CudaSlice<bf16>) -> Self {
        Self {
            span: Span::new(address_of(slice), slice.num_bytes()),
            source: InputSource::Bf16(slice),
        }
    }

    /// The whole of a `u32` buffer (row counts).
    pub(crate) fn from_words(slice: &'a CudaSlice<u32>) -> Self {
        Self {
            span: Span::new(address_of(slice), slice.num_bytes()),
            source: InputSource::Words(slice),
        }
    }

    /// The words of a `u32` view (row counts).
    pub(crate) fn from_words_view(view: CudaView<'a, u32>) -> Self {
        let span = Span::new(address_of(&view), view.num_bytes());
        Self {
            span,
            source: InputSource::WordsView(view),
        }
    }

    /// `len_bytes` bytes of device memory at address `ptr`, not managed by cudarc.
    ///
    /// Validation checks only the numbers (alignment, length for the shape, no overlap with
    /// an output), never the memory.
    ///
    /// # Safety
    /// Until every launch that uses this input has finished on the GPU (synchronise the
    /// stream, or order later work after it), `ptr .. ptr + len_bytes` must be device memory
    /// readable in the [`crate::GroupedGemm`]'s CUDA context, stay allocated, and not be
    /// written by anything else. No stream synchronisation is done for it: the caller orders
    /// its producers before the launch's stream.
    pub unsafe fn from_raw(ptr: u64, len_bytes: usize) -> Self {
        Self {
            span: Span::new(ptr, len_bytes),
            source: InputSource::Raw,
        }
    }

    /// A zero-length input at address 0: the operand of an empty problem (`m == 0` for A
    /// and its scales, `n == 0` for B). Validation rejects it wherever bytes are needed.
    pub fn empty() -> Self {
        Self {
            span: Span::default(),
            source: InputSource::Raw,
        }
    }

    /// Device address of the first byte.
    pub fn addr(&self) -> u64 {
        self.span.addr
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.span.len_bytes
    }

    /// Address and length, as validation sees them.
    pub fn span(&self) -> Span {
        self.span
    }

    /// The CUDA context of the cudarc buffer, `None` for raw memory.
    pub(crate) fn context(&self) -> Option<&Arc<CudaContext>> {
        match &self.source {
            InputSource::Slice(s) => Some(s.context()),
            InputSource::View(v) => Some(DeviceSlice::stream(v).context()),
            InputSource::Words(s) => Some(s.context()),
            InputSource::WordsView(v) => Some(DeviceSlice::stream(v).context()),
            InputSource::Half(s) => Some(s.context()),
            InputSource::Bf16(s) => Some(s.context()),
            InputSource::Raw => None,
        }
    }

    /// Makes `stream` wait for the buffer's last write; the returned guard records the read
    /// when dropped (drop it after the launch is enqueued). `None` for raw memory.
    pub(crate) fn read_access<'s>(&'s self, stream: &'s CudaStream) -> Option<SyncOnDrop<'s>> {
        match &self.source {
            InputSource::Slice(s) => Some(s.device_ptr(stream).1),
            InputSource::View(v) => Some(v.device_ptr(stream).1),
            InputSource::Words(s) => Some(s.device_ptr(stream).1),
            InputSource::WordsView(v) => Some(v.device_ptr(stream).1),
            InputSource::Half(s) => Some(s.device_ptr(stream).1),
            InputSource::Bf16(s) => Some(s.device_ptr(stream).1),
            InputSource::Raw => None,
        }
    }
}

impl<'a> From<&'a CudaSlice<u8>> for DeviceInput<'a> {
    fn from(slice: &'a CudaSlice<u8>) -> Self {
        Self::from_slice(slice)
    }
}

impl<'a> From<CudaView<'a, u8>> for DeviceInput<'a> {
    fn from(view: CudaView<'a, u8>) -> Self {
        Self::from_view(view)
    }
}

impl std::fmt::Debug for DeviceInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            InputSource::Slice(_) => "slice",
            InputSource::View(_) | InputSource::WordsView(_) => "view",
            InputSource::Words(_) | InputSource::Half(_) | InputSource::Bf16(_) => "slice",
            InputSource::Raw => "raw",
        };
        f.debug_struct("DeviceInput")
            .field("addr", &format_args!("{:#x}", self.span.addr))
            .field("len_bytes", &self.span.len_bytes)
            .field("source", &kind)
            .finish()
    }
}

/// Where an output came from. The `&'a mut` the caller gave up is kept as a pointer so that
/// `launch(&plan)` can call cudarc's `device_ptr_mut` (which takes `&mut`) through a shared
/// borrow of the problem; `DeviceOutput::lock` makes that access exclusive.
enum OutputSource<'a> {
    /// From `&'a mut CudaSlice<f16>`.
    Slice(NonNull<CudaSlice<f16>>, PhantomData<&'a mut CudaSlice<f16>>),
    /// From `&'a mut CudaSlice<bf16>`.
    SliceBf16(
        NonNull<CudaSlice<bf16>>,
        PhantomData<&'a mut CudaSlice<bf16>>,
    ),
    /// An owned `CudaViewMut<'a, f16>`, boxed (freed in `Drop`).
    View(NonNull<CudaViewMut<'a, f16>>),
    Raw,
}

/// The output C of one problem: a device buffer of fp16, its address, its length in bytes,
/// and an exclusive borrow of the cudarc buffer it came from.
///
/// Build it from `&mut CudaSlice<f16>` or `CudaViewMut<f16>` (safe: nothing else can touch
/// the memory while the problem lives), or from a raw address with
/// [`DeviceOutput::from_raw`].
pub struct DeviceOutput<'a> {
    span: Span,
    context: Option<Arc<CudaContext>>,
    source: OutputSource<'a>,
    /// Held while a launch uses `source` mutably.
    lock: Mutex<()>,
}

// SAFETY: the pointers in `OutputSource` stand for an exclusive borrow (`&'a mut CudaSlice`)
// or an owned `CudaViewMut`, both `Send` (cudarc's buffers and views are `Send + Sync`; a
// view holds shared references to `Sync` events and streams). The only `&mut` made from them
// (in `write_access`) is made while `lock` is held, so shared use from several threads is
// serialised.
unsafe impl Send for DeviceOutput<'_> {}
// SAFETY: as above: every access through `&self` either reads immutable fields or holds `lock`.
unsafe impl Sync for DeviceOutput<'_> {}

impl<'a> DeviceOutput<'a> {
    /// The one constructor the public ones go through (an unlocked output).
    fn with(span: Span, context: Option<Arc<CudaContext>>, source: OutputSource<'a>) -> Self {
        Self {
            span,
            context,
            source,
            lock: Mutex::new(()),
        }
    }

    /// The whole of `slice` (`2 * slice.len()` bytes).
    pub fn from_slice(slice: &'a mut CudaSlice<f16>) -> Self {
        let span = Span::new(address_of(&*slice), slice.num_bytes());
        let context = Some(slice.context().clone());
        let source = OutputSource::Slice(NonNull::from(slice), PhantomData);
        Self::with(span, context, source)
    }

    /// The whole of a bf16 `slice` (`2 * slice.len()` bytes), for bf16 outputs
    /// ([`crate::OutputType::Bf16`]).
    pub fn from_bf16_slice(slice: &'a mut CudaSlice<bf16>) -> Self {
        let span = Span::new(address_of(&*slice), slice.num_bytes());
        let context = Some(slice.context().clone());
        let source = OutputSource::SliceBf16(NonNull::from(slice), PhantomData);
        Self::with(span, context, source)
    }

    /// The elements of `view` (e.g. `slice.slice_mut(off..off + len)`).
    pub fn from_view(view: CudaViewMut<'a, f16>) -> Self {
        let span = Span::new(address_of(&view), view.num_bytes());
        let context = Some(DeviceSlice::stream(&view).context().clone());
        let source = OutputSource::View(NonNull::from(Box::leak(Box::new(view))));
        Self::with(span, context, source)
    }

    /// `len_bytes` bytes of device memory at address `ptr`, not managed by cudarc, holding
    /// fp16 values.
    ///
    /// Validation checks only the numbers (alignment, length for the shape, no overlap with
    /// any input or other output of the group), never the memory.
    ///
    /// # Safety
    /// Until every launch that uses this output has finished on the GPU, `ptr .. ptr +
    /// len_bytes` must be device memory writable in the [`crate::GroupedGemm`]'s CUDA
    /// context, stay allocated, and be neither read nor written by anything else. No stream
    /// synchronisation is done for it: the caller orders its consumers after the launch.
    pub unsafe fn from_raw(ptr: u64, len_bytes: usize) -> Self {
        Self::with(Span::new(ptr, len_bytes), None, OutputSource::Raw)
    }

    /// A zero-length output at address 0: the C of an empty problem (`m == 0` or `n == 0`).
    pub fn empty() -> Self {
        // SAFETY: zero bytes; validation rejects it wherever bytes are needed.
        unsafe { Self::from_raw(0, 0) }
    }

    /// Device address of the first byte.
    pub fn addr(&self) -> u64 {
        self.span.addr
    }

    /// Length in bytes (twice the number of fp16 elements).
    pub fn len_bytes(&self) -> usize {
        self.span.len_bytes
    }

    /// Address and length, as validation sees them.
    pub fn span(&self) -> Span {
        self.span
    }

    /// The CUDA context of the cudarc buffer, `None` for raw memory.
    pub(crate) fn context(&self) -> Option<&Arc<CudaContext>> {
        self.context.as_ref()
    }

    /// Takes the buffer for writing. With `Some(stream)`, `stream` waits for the buffer's
    /// last reads and writes now, and the returned guard records the write when dropped
    /// (drop it after the launch is enqueued); `None` skips cudarc's bookkeeping (stream
    /// capture). Blocks while another launch holds this output.
    pub(crate) fn write_access<'s>(&'s self, stream: Option<&'s CudaStream>) -> WriteAccess<'s> {
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(stream) = stream else {
            return WriteAccess {
                _record: None,
                _lock: lock,
            };
        };
        let record = match &self.source {
            // SAFETY: the pointer comes from the `&'a mut CudaSlice` given to `from_slice`,
            // still borrowed for 'a ('s <= 'a), and `lock` makes this the only `&mut` made
            // from it until `WriteAccess` drops `record` (before `lock`).
            OutputSource::Slice(p, _) => Some(unsafe { &mut *p.as_ptr() }.device_ptr_mut(stream).1),
            // SAFETY: as above, for the `&'a mut CudaSlice<bf16>` of `from_bf16_slice`.
            OutputSource::SliceBf16(p, _) => {
                Some(unsafe { &mut *p.as_ptr() }.device_ptr_mut(stream).1)
            }
            // SAFETY: as above; the box is owned by `self` and freed only in `Drop`.
            OutputSource::View(p) => Some(unsafe { &mut *p.as_ptr() }.device_ptr_mut(stream).1),
            OutputSource::Raw => None,
        };
        WriteAccess {
            _record: record,
            _lock: lock,
        }
    }
}

/// Exclusive use of a [`DeviceOutput`] by one launch. Field order is drop order: the event
/// is recorded (and the `&mut` behind it ends) before the lock is released.
pub(crate) struct WriteAccess<'s> {
    _record: Option<SyncOnDrop<'s>>,
    _lock: MutexGuard<'s, ()>,
}

impl Drop for DeviceOutput<'_> {
    fn drop(&mut self) {
        if let OutputSource::View(p) = self.source {
            // SAFETY: made by `Box::leak` in `from_view`, freed only here.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}

impl<'a> From<&'a mut CudaSlice<f16>> for DeviceOutput<'a> {
    fn from(slice: &'a mut CudaSlice<f16>) -> Self {
        Self::from_slice(slice)
    }
}

impl<'a> From<CudaViewMut<'a, f16>> for DeviceOutput<'a> {
    fn from(view: CudaViewMut<'a, f16>) -> Self {
        Self::from_view(view)
    }
}

impl std::fmt::Debug for DeviceOutput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.source {
            OutputSource::Slice(..) | OutputSource::SliceBf16(..) => "slice",
            OutputSource::View(_) => "view",
            OutputSource::Raw => "raw",
        };
        f.debug_struct("DeviceOutput")
            .field("addr", &format_args!("{:#x}", self.span.addr))
            .field("len_bytes", &self.span.len_bytes)
            .field("source", &kind)
            .finish()
    }
}

/// Problems must stay covariant in their lifetime (so `&'p [Problem<'a>]` passes as
/// `&'p [Problem<'p>]`): checked at compile time.
#[allow(dead_code)]
fn covariant<'long: 'short, 'short>(
    i: DeviceInput<'long>,
    o: DeviceOutput<'long>,
) -> (DeviceInput<'short>, DeviceOutput<'short>) {
    (i, o)
}
