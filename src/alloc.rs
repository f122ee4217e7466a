//! The component's allocator: a bump allocator over the memory after
//! `__heap_base` that counts live allocations and starts over when none is
//! left.
//!
//! In `host-example` an instance lives for one request and its memory is
//! reclaimed whole when the host drops it, so freeing block by block is
//! wasted work. Hosts that keep one instance for many calls (jco, most
//! plugin systems) need the memory back, though: after each call's
//! post-return every allocation of that call (arguments, locals, the reply)
//! has been freed, the count is zero, and the next allocation starts again
//! at `__heap_base`. Nothing is freed early: the pointer goes back only when
//! no allocation is live (a static holding heap memory would simply keep it
//! from going back). The point of bumping is what it avoids:
//! Rust's default allocator always asks for new pages with `memory.grow`,
//! even when the initial memory has room, and in a pooling host every grow is
//! an `mprotect` (and a TLB shootdown on every core) on instantiation and
//! again on reset. Starting in the initial memory, a typical request never
//! grows memory at all. Larger requests still grow as needed, up to the
//! host's memory cap.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;

const PAGE: usize = 65536;

unsafe extern "C" {
    /// Set by the linker: the first byte after the stack and static data.
    static __heap_base: u8;
}

struct Bump {
    next: Cell<usize>,
    /// Allocations not yet freed.
    live: Cell<usize>,
}

// SAFETY: the component is single-threaded (wasm32 without threads).
unsafe impl Sync for Bump {}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    next: Cell::new(0),
    live: Cell::new(0),
};

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut next = self.next.get();
        if next == 0 {
            next = core::ptr::addr_of!(__heap_base) as usize;
        }
        let start = match next.checked_add(layout.align() - 1) {
            Some(n) => n & !(layout.align() - 1),
            None => return core::ptr::null_mut(),
        };
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        let available = wasm32::memory_size(0) * PAGE;
        if end > available {
            let pages = (end - available).div_ceil(PAGE);
            if wasm32::memory_grow(0, pages) == usize::MAX {
                return core::ptr::null_mut();
            }
        }
        self.next.set(end);
        self.live.set(self.live.get() + 1);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            // Nothing is allocated any more: start over (0 means the heap base).
            self.next.set(0);
        } else if ptr as usize + layout.size() == self.next.get() {
            // Only the most recent allocation can be given back (cheap, and
            // it is the common case of a temporary buffer).
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growing the most recent allocation happens in place.
        let end = ptr as usize + layout.size();
        if end == self.next.get() {
            let new_end = ptr as usize + new_size;
            let available = wasm32::memory_size(0) * PAGE;
            if new_end <= available
                || wasm32::memory_grow(0, (new_end - available).div_ceil(PAGE)) != usize::MAX
            {
                self.next.set(new_end);
                return ptr;
            }
            return core::ptr::null_mut();
        }
        // SAFETY: the caller guarantees `layout` describes `ptr`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                // The old block is free now (never the last one: `new` is).
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
